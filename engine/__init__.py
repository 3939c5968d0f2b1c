"""hsbulk: async, high-throughput batch import/export for the HubSpot CRM API."""

__version__ = "0.1.0"

__all__ = ["__version__"]
