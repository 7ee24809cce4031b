"""stylecast: a gRPC model server for real-time arbitrary style transfer."""

__version__ = "0.1.0"
