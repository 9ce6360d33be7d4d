"""The cloud side: component artifacts and recipes, component versions, deployments (GDK conventions)."""
