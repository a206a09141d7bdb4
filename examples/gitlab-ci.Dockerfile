# The image the jobs of gitlab-ci.yml's child pipeline run in: matrix (built from this
# checkout), Docker's daemon with the entrypoint that starts it inside a privileged job
# (docker:dind), and sshpass, which verify uses to log in to each image's SSH server.
# gitlab-ci.yml builds it on each platform's own runners.
FROM rust:1-alpine AS matrix
RUN apk add --no-cache musl-dev build-base cmake perl
WORKDIR /src
COPY . .
RUN cargo install --locked --path . --root /opt/matrix

FROM docker:28-dind
RUN apk add --no-cache sshpass
COPY --from=matrix /opt/matrix/bin/matrix /usr/local/bin/matrix
# the jobs start the daemon themselves (the build jobs) or not at all (publish)
ENTRYPOINT []
