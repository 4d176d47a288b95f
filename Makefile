# verifyq developer tasks. `make` lists them.
.DEFAULT_GOAL := help
GO ?= go

.PHONY: help test test-browser

help: ## list the targets
	@grep -E '^[a-zA-Z_/.-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-14s %s\n", $$1, $$2}'

test: ## vet, then every test with the race detector (needs redis-server)
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

# A plain `go build -C tools -o ../bin/mailpit github.com/axllent/mailpit`
# gives a working SMTP server but no web UI: the module ships the UI's
# sources, not its compiled assets. This builds the assets with npm (from the
# module's package-lock.json) in a scratch copy of the pinned module, then
# mailpit itself.
bin/mailpit: tools/go.mod tools/go.sum ## mailpit, the development inbox, with its web UI (needs npm)
	$(GO) mod download -C tools github.com/axllent/mailpit
	@set -e; src="$$($(GO) list -C tools -m -f '{{.Dir}}' github.com/axllent/mailpit)"; \
	tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	cp -R "$$src/." "$$tmp"; chmod -R u+w "$$tmp"; \
	echo "building mailpit's web UI with npm in $$tmp"; \
	(cd "$$tmp" && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent); \
	mkdir -p bin; $(GO) build -C "$$tmp" -o "$(CURDIR)/bin/mailpit" .

test-browser: bin/mailpit ## headless Chromium: the dashboard and the mailpit inbox, screenshots in docs/screenshots/
	$(GO) test -tags browser -count=1 -v -run TestBrowser ./e2e
