# One image for every `bikeshare` command (ECS tasks) and both SageMaker contracts
# (`serve`: inference on :8080; `train`: a training job); see docker/entrypoint.sh.
#   docker build --build-arg RUST_IMAGE=rust:1.95-bookworm@sha256:<digest> \
#                --build-arg RUNTIME_IMAGE=debian:bookworm-slim@sha256:<digest> -t bikeshare .
# Base images are pinned by digest through these arguments: the defaults are deliberately
# invalid (all zeros), so a build without reviewed digests fails instead of pulling a moving
# tag. CI passes the digests recorded in docker/base-images.env.
ARG RUST_IMAGE=rust:1.95-bookworm@sha256:0000000000000000000000000000000000000000000000000000000000000000
ARG RUNTIME_IMAGE=debian:bookworm-slim@sha256:0000000000000000000000000000000000000000000000000000000000000000

# checkov:skip=CKV_DOCKER_7: the tag is pinned by digest through the build argument
FROM ${RUST_IMAGE} AS build
# xgboost-rs builds XGBoost from source (cmake, clang, libclang for bindgen).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake=3.* clang=1:14.* libclang-dev=1:14.* \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin bikeshare \
 && cp target/release/bikeshare /bikeshare

FROM ${RUNTIME_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates=2023* libgomp1=12.* \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin bikeshare \
 && mkdir -p /opt/ml && chown bikeshare /opt/ml
COPY --from=build /bikeshare /usr/local/bin/bikeshare
COPY docker/entrypoint.sh /usr/local/bin/entrypoint.sh
COPY infra/environments/ /app/environments/
USER 10001
WORKDIR /app
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD ["/usr/local/bin/bikeshare", "--version"]
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD ["--help"]
