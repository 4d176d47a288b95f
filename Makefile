# verifyq development targets. `make help` lists them.

BIN := $(CURDIR)/bin
PROTOS := proto/message/message.proto proto/verifyq/v1/verifyq.proto

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "%-12s %s\n", $$1, $$2}'

.PHONY: test
test: ## vet and run every test with the race detector (needs redis-server)
	go vet ./... && go test -race -count=1 ./...

.PHONY: proto
proto: ## regenerate the Go code of proto/ (protoc from Debian's protobuf-compiler, plugins pinned in tools/go.mod)
	cd tools && go build -o $(BIN)/ tool
	protoc -I proto \
		--plugin=protoc-gen-go=$(BIN)/protoc-gen-go \
		--plugin=protoc-gen-go-grpc=$(BIN)/protoc-gen-go-grpc \
		--go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		$(PROTOS)

.PHONY: proto-check
proto-check: proto ## fail when the committed generated code is stale
	@git diff --exit-code -- proto || { echo 'proto/: generated code is stale: run make proto and commit' >&2; exit 1; }
	@test -z "$$(git status --porcelain -- proto)" || { git status --porcelain -- proto >&2; echo 'proto/: uncommitted generated files: run make proto and commit' >&2; exit 1; }
