#!/bin/bash
# Build step of the `serve` family (examples/families.yaml): the API app the service
# runs. Its release comes in as FAMILY_VERSION.
set -euo pipefail
mkdir -p /opt/serve
cat > /opt/serve/app.py <<PY
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

VERSION = "${FAMILY_VERSION}"


async def version(request):
    return JSONResponse({"version": VERSION})


async def models(request):
    return JSONResponse({"models": []})


app = Starlette(routes=[Route("/api/version", version), Route("/api/tags", models)])
PY
python -c "import ast; ast.parse(open('/opt/serve/app.py').read())"
