# The server as a container: `docker build -t fhirserver .` then
#   docker run -p 8080:8080 -p 11112:11112 -v fhirdata:/data fhirserver
# (SQLite in the /data volume; set FHIRSERVER_DATABASE_URL for PostgreSQL, see compose.yaml).
# the DICOM viewer's static files, built with Debian's nodejs and npm (not in the runtime image)
FROM python:3.11-slim AS viewer
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*
WORKDIR /viewer
COPY viewer/package.json viewer/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY viewer/index.html viewer/vite.config.js ./
COPY viewer/src ./src
RUN npx --no-install vite build

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    FHIRSERVER_DATA_DIR=/data FHIRSERVER_HOST=0.0.0.0
WORKDIR /app
# dcmtk is a test peer only: not installed in the runtime image
COPY pyproject.toml README.md LICENSE ./
COPY fhirserver ./fhirserver
COPY dicom ./dicom
COPY smart_auth ./smart_auth
COPY portal ./portal
COPY conformance ./conformance
COPY viewer/__init__.py ./viewer/__init__.py
COPY --from=viewer /viewer/static ./viewer/static
RUN pip install . && useradd --system --uid 10001 --home /data fhir && mkdir -p /data && chown fhir /data
USER fhir
VOLUME ["/data"]
EXPOSE 8080 11112
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=4).status != 200)"
ENTRYPOINT ["fhirserver"]
CMD ["serve", "--host", "0.0.0.0"]
