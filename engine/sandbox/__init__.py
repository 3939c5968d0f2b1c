"""A HubSpot-compatible CRM server (aiohttp.web) for the demo, the tests and the benchmarks.

It imports nothing of the engine: it plays HubSpot, and sharing code with the client
would hide disagreements between the two.
"""
