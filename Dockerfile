# Build stage: the release binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests ./tests
COPY probes ./probes
COPY migrations ./migrations
RUN cargo build --release --locked --bin provenance

# Runtime: the binary, the probe sets, and python3-pip for `provenance models fetch`.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 python3-pip curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/provenance /usr/local/bin/provenance
COPY probes /app/probes
WORKDIR /app
ENV PROVENANCE_MODELS=/models
VOLUME ["/models"]
EXPOSE 8081
ENTRYPOINT ["provenance"]
CMD ["--help"]
