"""The gRPC layer: translates TaskHubSidecarService calls to engine calls and back."""
