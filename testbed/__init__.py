"""What both the tests and the bench stand on: real servers on loopback (Redis, a file server, a delay
proxy), the gateway and the emulator as processes, image makers, a gRPC client and its stream driver.
Run from the checkout only: not shipped in the gateway's wheel or image."""
