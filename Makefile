# MediaRelay: `make run` serves on the embedded defaults, `make test` runs the whole suite.
# Both install what they need on a fresh Debian machine (apt and pip), then build.

SWIFT        ?= swift
PYTHON       ?= python3
APT_BUILD    := pkg-config liblz4-dev libxxhash-dev zlib1g-dev
APT_TEST     := curl openssl lz4 chromium chromium-driver postgresql nginx-light
PIP_TEST     := fal-client==1.0.3 pytest selenium cryptography h2
RELAY_FLAGS  ?=

.PHONY: run test build release deps test-deps swift-test client-test clean embed-catalog

run: deps release
	./.build/release/media-relay serve --config Config/relay.json $(RELAY_FLAGS)

test: test-deps build swift-test client-test

release: deps
	$(SWIFT) build -c release --product media-relay

build: deps
	$(SWIFT) build --build-tests

swift-test:
	# In parallel (Swift Testing's default): the tests that ordered work by sleeping or waited out real deadlines run
	# on injected clocks now. The development-CA tests still wait for openssl subprocesses on a pool thread (a few
	# hundred ms each); no other test's outcome depends on a deadline that short.
	$(SWIFT) test --skip-build

client-test:
	MEDIA_RELAY_BIN=$(CURDIR)/.build/debug/media-relay $(PYTHON) -m pytest -q Tests/clients

# apt packages are installed only when missing, so a warm machine does not touch the network.
deps:
	@missing=""; for p in $(APT_BUILD); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) || \
	  { echo "could not install$$missing (need root and the Debian mirror)"; exit 1; }; fi

test-deps: deps
	@missing=""; for p in $(APT_TEST); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) || \
	  { echo "could not install$$missing"; exit 1; }; fi
	@$(PYTHON) -c "import fal_client, pytest, selenium, cryptography, h2" 2>/dev/null || $(PYTHON) -m pip install -q $(PIP_TEST)

clean:
	rm -rf .build

# The binary carries a copy of Config/models.json (the one source) so that it serves its catalog from any directory:
# refresh the copy after editing the catalog (EmbeddedCatalogTests fails while they differ).
embed-catalog:
	awk 'FNR == NR { json = json "        " $$0 "\n"; next } /^        """#$$/ { skip = 0 } !skip { print } \
	  /= #"""$$/ { printf "%s", json; skip = 1 }' Config/models.json Sources/RelayServer/EmbeddedCatalog.swift \
	  > Sources/RelayServer/EmbeddedCatalog.swift.new
	mv Sources/RelayServer/EmbeddedCatalog.swift.new Sources/RelayServer/EmbeddedCatalog.swift
