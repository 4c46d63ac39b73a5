# `make install` is `./dev install` (DESTDIR=/some/dir stages the files there instead).
.PHONY: install test bench
install:
	DESTDIR="$(DESTDIR)" ./dev install
test:
	./dev test
bench:
	./dev bench
