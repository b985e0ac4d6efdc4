"""Net configs (official ProxylessNAS JSON format) shipped with fruitnet."""
