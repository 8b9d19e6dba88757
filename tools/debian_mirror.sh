# Sourced by the tools that fetch from Debian's archive (tools/build_python.sh,
# tools/check_python314.sh): sets `mirror` and `keyring` to the mirror and keyring of the
# machine's own Debian entry (deb822, the one that is not the security archive), so what
# they fetch is trusted exactly as the system's own packages are.
mirror=http://deb.debian.org/debian
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
system_sources=/etc/apt/sources.list.d/debian.sources
if [ -r "$system_sources" ]; then
    read -r found_mirror found_keyring < <(awk '
        /^[[:space:]]*$/ { if (uri != "" && uri !~ /security/) { print uri, key; done = 1; exit }
                           uri = ""; key = "" }
        /^URIs:/ { uri = $2 }
        /^Signed-By:/ { key = $2 }
        END { if (!done && uri != "" && uri !~ /security/) print uri, key }' "$system_sources") || true
    mirror="${found_mirror:-$mirror}"
    keyring="${found_keyring:-$keyring}"
fi
