# Image with both binaries; docker-compose.yml picks one per service:
#   command: ["/usr/local/bin/enqueuer"]   or   command: ["/usr/local/bin/worker"]
# The default CMD is the enqueuer.
#
#   docker build -t verifyq .
#   docker run --rm verifyq /usr/local/bin/enqueuer -new-key gateway send,verify   # a key and its line
#   docker run --rm -e REDIS_URL=redis://host:6379/0 -e HTTP_ADDR=:8080 -e API_KEYS_FILE=/keys \
#     -v "$PWD/api-keys:/keys:ro" -p 8080:8080 verifyq
#   docker run --rm -e REDIS_URL=... -e SMTP_URL=... verifyq /usr/local/bin/worker

# Match the go line of go.mod (go 1.26.x).
ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags='-s -w' -o /out/ ./cmd/enqueuer ./cmd/worker

# Static binaries only: no shell, no package manager; runs as uid/gid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/enqueuer /out/worker /usr/local/bin/
USER 65532:65532
# enqueuer HTTP_ADDR; the admin servers (8081, 8082) stay inside unless set to 0.0.0.0.
EXPOSE 8080
CMD ["/usr/local/bin/enqueuer"]
