"""image-gateway: one stable, cacheable URL for every image in MinIO/S3."""

__version__ = "0.1.0"
