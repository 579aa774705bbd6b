"""Generated gRPC stubs of protos/shmlane/v1/control.proto (built by CMake)."""
