"""Engine builds: what a resource needs built (targets), independent of how it runs (render) or stands (observation)."""
