"""ProxylessNAS-style hardware-aware architecture search (`python -m fruitnet.search`)."""
