# Build a static binary, then run it as a non-root user with nothing else.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /tollgate ./cmd/tollgate && mkdir -p /data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /tollgate /usr/local/bin/tollgate
COPY config.yaml /etc/tollgate/config.yaml
COPY --from=build --chown=65532:65532 /data /var/lib/tollgate
ENV TOLLGATE_LISTEN=0.0.0.0:8080 \
    TOLLGATE_ADMIN_LISTEN=127.0.0.1:9901 \
    TOLLGATE_DATA_DIR=/var/lib/tollgate
VOLUME /var/lib/tollgate
EXPOSE 8080
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve", "-config", "/etc/tollgate/config.yaml"]
