# The operator image for people with Docker: slim, pinned, non-root, fit for a read-only root
# filesystem; the same layout as the image the dev cluster builds without Docker
# (operator/autoglm_devcluster/images/operator.Containerfile). The wheel carries the CRDs
# (`autoglm-operator install-crds`) and nothing of the dev cluster or the tests.
FROM python:3.11.10-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY crds ./crds
COPY operator/autoglm_operator ./operator/autoglm_operator
# operator/autoglm_operator/crds links to ../../crds, copied above: the wheel gets the files
RUN pip install --no-cache-dir --upgrade pip==24.2 \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11.10-slim-bookworm
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin autoglm
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 65532:65532
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
EXPOSE 8080 8081 9443
ENTRYPOINT ["autoglm-operator"]
CMD ["run", "--all-namespaces"]
