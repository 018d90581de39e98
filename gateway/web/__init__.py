"""The HTTP surface: aiohttp application, thin handlers, HTTP rules."""
