"""Pure rendering: spec -> the desired children (Deployments, ConfigMaps, Services); routes are the
traffic provider's."""
