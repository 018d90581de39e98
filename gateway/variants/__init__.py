"""Sized and re-encoded variants: query spec, service, Pillow transforms."""
