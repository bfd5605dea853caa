"""Integration tests of the registry: real `ruta registry` processes."""
