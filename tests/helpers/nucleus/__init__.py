"""A test nucleus: the Greengrass IPC wire, the nucleus's authorisation, and recipes run as the nucleus runs them.

Test-only stand-in for the nucleus binary, which no registry ships (see ../shared/REAL-PARTS.md):
the components on the other side are unchanged and talk through the real awsiotsdk client.

- :mod:`.wire`: event-stream framing and its RPC layer, written from the protocol.
- :mod:`.server`: the eventstream-RPC server on a Unix socket (CONNECT with the SVCUID, streams).
- :mod:`.access`: ``accessControl`` evaluated as the nucleus evaluates it.
- :mod:`.nucleus`: the IPC operations fieldlens uses, the configuration store and its
  validation round trip, and AWS IoT Core beside the core.
- :mod:`.deployment`: what tests deploy (`fieldlens build` of the tiny model) and the services' ready lines.
- :mod:`.core`: a ``/greengrass/v2`` directory and the recipes' lifecycles (Install, Startup,
  Run, Setenv, timeouts, recipe variables) from a ``fieldlens build`` output.
"""
