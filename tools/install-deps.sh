#!/bin/sh
# Install every Debian 12 package ringmail needs to build, test and benchmark.
# Run as root (or with sudo available).
set -eu
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# Postfix (a real server in the interop tests) installs without questions this way.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends \
    build-essential make pkg-config ca-certificates openssl \
    android-libboringssl-dev android-boringssl \
    liburing-dev libjemalloc-dev libpq-dev libc-ares-dev libidn2-dev \
    libjansson-dev libinih-dev libcmocka-dev libgmime-3.0-dev libmicrohttpd-dev \
    postfix python3 python3-aiosmtpd swaks libnet-ssleay-perl dnsmasq-base iproute2 procps \
    postgresql postgresql-client python3-dkim python3-nacl \
    clang clang-format gnuplot-nox bc bsdutils valgrind curl chromium xxd \
    nsd unbound ldnsutils python3-jsonschema zlib1g-dev libssl-dev
