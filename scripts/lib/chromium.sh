# Shared by the project's scripts: headless Chromium for the dashboard's browser check. Source it; it
# defines functions and changes nothing by itself.

# The Chromium executable on this machine, or nothing.
detectq_chromium() {
    command -v chromium || command -v chromium-browser || command -v google-chrome || true
}

# Installs Chromium (and python3, which drives it) when missing (Debian's packages).
detectq_install_chromium() {
    if [ -n "$(detectq_chromium)" ] && command -v python3 >/dev/null 2>&1; then
        return 0
    fi
    echo "==> installing chromium and python3"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium python3 >/dev/null
}
