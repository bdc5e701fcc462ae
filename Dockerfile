# The operator image: slim, pinned, non-root; the entrypoint is the console command.
FROM python:3.11.10-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir --upgrade pip==24.2 \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11.10-slim-bookworm
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin autoglm
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY crds /opt/autoglm/crds
USER 65532:65532
ENV PYTHONUNBUFFERED=1
EXPOSE 8080 8081 9443
ENTRYPOINT ["autoglm-operator"]
CMD ["run", "--all-namespaces"]
