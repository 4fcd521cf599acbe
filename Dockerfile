# Multi-stage build: a static binary (the page's OPAQUE bundle is committed), then a minimal
# non-root image.
# docker build -t sessiond . && docker run -p 127.0.0.1:8080:8080 -e SESSIOND_INSECURE_HTTP=true sessiond   (a local trial:
# README.md says why plain HTTP needs that setting, and what production needs instead: TLS)
# The key file lives in its own volume (/keys), apart from the data (/data): a copy or backup of
# the data must not carry the keys that protect it. Mount a secret there in production.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# docker build --build-arg VERSION=1.4.0 --build-arg REVISION=$(git rev-parse HEAD): what
# `sessiond version` and sessiond_build_info say.
ARG VERSION=(devel) REVISION=unknown
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X 'main.version=${VERSION}' -X 'main.revision=${REVISION}'" -o /out/sessiond ./cmd/sessiond \
 && mkdir -p /out/data /out/keys && chown 65532:65532 /out/data /out/keys && chmod 700 /out/keys

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/sessiond /sessiond
COPY --from=build --chown=65532:65532 /out/data /data
COPY --from=build --chown=65532:65532 /out/keys /keys
ENV SESSIOND_ADDR=:8080 SESSIOND_DATA_DIR=/data SESSIOND_KEY_FILE=/keys/keys.json SESSIOND_LOG_FORMAT=json
VOLUME /data /keys
EXPOSE 8080
USER 65532:65532
ENTRYPOINT ["/sessiond"]
