# One image for every `bikeshare` command (ECS tasks) and both SageMaker contracts
# (`serve`: inference on :8080; `train`: a training job); see docker/entrypoint.sh.
#   docker build $(docker/base-images.sh | sed 's/^/--build-arg /') -t bikeshare .
# Base images are pinned by digest through these two arguments, which have no default: a build
# without them stops at the first FROM ("base name should not be blank"), and one given a tag
# without a digest stops at the check below. docker/base-images.sh prints them from the tags
# and reviewed digests in docker/base-images.env and refuses a placeholder (infra/README.md,
# "Base images").
ARG RUST_IMAGE
ARG RUNTIME_IMAGE

# checkov:skip=CKV_DOCKER_7: the tag is pinned by digest through the build argument
FROM ${RUST_IMAGE} AS build
ARG RUST_IMAGE
RUN case "${RUST_IMAGE}" in *@sha256:?*) ;; \
      *) echo "RUST_IMAGE=${RUST_IMAGE} is not pinned by digest: build with docker/base-images.sh" >&2; exit 1 ;; \
    esac
# xgboost-rs builds XGBoost from source (cmake, clang, libclang for bindgen).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake=3.* clang=1:14.* libclang-dev=1:14.* \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin bikeshare \
 && cp target/release/bikeshare /bikeshare

FROM ${RUNTIME_IMAGE}
ARG RUNTIME_IMAGE
RUN case "${RUNTIME_IMAGE}" in *@sha256:?*) ;; \
      *) echo "RUNTIME_IMAGE=${RUNTIME_IMAGE} is not pinned by digest: build with docker/base-images.sh" >&2; exit 1 ;; \
    esac
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
