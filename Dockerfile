# Baton as an application installs it: the packed package in /app/node_modules, drizzle-orm (its peer) beside
# it for handlers to import, and a config with its handlers in /app (the quickstart's, until an image built
# FROM this one copies its own over it). Node is PID 1 and gets `docker stop`'s SIGTERM itself: the node
# drains and exits 0. Give it longer than [node] shutdown_timeout_ms: `docker stop --time 40`.
# It listens on every address, which needs a token, and none is built in:
#   docker run -e BATON_HTTP__TOKEN="$(openssl rand -hex 24)" -p 8080:8080 -v baton-data:/app/.baton baton

# Build: compile and pack, as `npm publish` would.
FROM node:20-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# No scripts yet: `prepare` would build before the sources are here.
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY . .
RUN npm run build && npm pack --ignore-scripts --pack-destination /tmp && mv /tmp/baton-runtime-*.tgz /tmp/baton-runtime.tgz

# Run: a fresh install of the tarball with production dependencies only, as a non-root user.
FROM node:20-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /tmp/baton-runtime.tgz /opt/baton/baton-runtime.tgz
RUN printf '{ "name": "baton-app", "private": true, "type": "module" }\n' > package.json \
  && npm install --omit=dev --engine-strict --no-audit --no-fund /opt/baton/baton-runtime.tgz \
  && npm cache clean --force \
  && cp -r node_modules/baton-runtime/examples/quickstart/. . \
  && mkdir .baton && chown node:node .baton
USER node
# The embedded store's data folder ([node] data_dir of the quickstart's config).
VOLUME ["/app/.baton"]
EXPOSE 8080
# Exec form: no shell between Docker and node, so SIGTERM reaches the node.
ENTRYPOINT ["node", "node_modules/baton-runtime/bin/baton.js"]
CMD ["-c", "baton.toml", "run", "--host", "0.0.0.0"]
