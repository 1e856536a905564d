#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need, then go vet and
# go test -race over every package.
set -euo pipefail
cd "$(dirname "$0")/.."
go vet ./...
go test -race -timeout 20m ./...
