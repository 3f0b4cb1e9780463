"""fluxedit as a Model Context Protocol server: tools an AI assistant calls to edit images.

The tools are a thin layer over the Python client (fluxedit.client) talking to a fluxedit server with an
API key, so keys, limits and prices are checked by the server alone, whichever transport serves them:
stdio (`fluxedit mcp`, see cli.py) or streamable HTTP mounted under the API at /mcp (see http.py).

Nothing is imported here: `fluxedit --help` imports cli.py, which must stay cheap.
"""
