"""What the edge, the aggregator and analytics share: settings, Redis key names, the click event."""

__version__ = "0.1.0"
