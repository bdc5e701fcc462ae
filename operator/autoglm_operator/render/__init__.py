"""Pure rendering: spec -> the desired child objects (Deployments, ConfigMaps, Services; routes are the traffic provider's)."""
