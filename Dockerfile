# The image the Helm chart (deploy/helm/shoal) runs: one static shoal binary
# serves every component. Not built by `make test` (no container builder
# here); build and push it for your cluster:
#   docker build -t registry.example.com/shoal:$(git describe --tags --always) .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
COPY third_party ./third_party
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/shoal ./cmd/shoal

# distroless/static: no shell; the chart's init containers run `shoal`
# subcommands (config-render, containerd-hosts). Runs as 65532 unless the
# chart asks for root (the agent, for its hostPath directories).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/shoal /usr/local/bin/shoal
ENTRYPOINT ["/usr/local/bin/shoal"]
