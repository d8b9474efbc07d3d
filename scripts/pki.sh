#!/usr/bin/env bash
# A lab PKI in three commands, with nothing but openssl:
#
#   scripts/pki.sh init                               # lab CA
#   scripts/pki.sh server receiver.lab 10.8.0.1       # receiver's certificate
#   scripts/pki.sh host lab-01                        # a lab host's cert + token
#
# Layout under --dir (default ./pki):
#   ca.crt  ca.key (0600)              the lab CA (10 years)
#   server.crt  server.key (0600)      the receiver's certificate (825 days)
#   hosts/ID.crt  ID.key (0600)  ID.token (0600)
#
# Keys are ECDSA P-256 in PKCS#8 PEM, what rustls (ring provider) reads.
# Keep ca.key off the lab hosts and the receiver: only the certificates and
# each host's own key and token travel.
set -euo pipefail

PROG=pki.sh
CA_DAYS=3650
LEAF_DAYS=825

usage() {
    cat <<EOF
Usage: $PROG [--dir DIR] COMMAND [ARGS]

Commands:
  init              create the lab CA (refuses to replace an existing one)
  server NAME...    issue the receiver's certificate for these DNS names
                    and IP addresses (replaces server.crt/.key)
  host HOST_ID      issue HOST_ID's client certificate and token, and print
                    the line for the receiver's [hosts] table
  hash-token FILE [HOST_ID]
                    print the [hosts] line for a token a host already has
                    (e.g. from the Python shipper); HOST_ID defaults to the
                    file name without .token

Options:
  --dir DIR         where the PKI lives (default ./pki)
  -h, --help        this help
EOF
}

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

DIR=./pki
while [[ $# -gt 0 ]]; do
    case $1 in
        --dir)
            [[ $# -ge 2 && -n $2 ]] || die "--dir needs a value"
            DIR=$2
            shift 2
            ;;
        -h | --help) usage; exit 0 ;;
        -*) die "unknown option: $1 (see --help)" ;;
        *) break ;;
    esac
done
[[ $# -ge 1 ]] || { usage >&2; exit 64; }
CMD=$1
shift

command -v openssl >/dev/null || die "openssl not found (Debian: apt-get install openssl)"
# Everything written here is either secret or meant to be copied with care.
umask 077

# new_key PATH: ECDSA P-256, PKCS#8 PEM (genpkey writes PKCS#8).
new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -pkeyopt ec_param_enc:named_curve -out "$1"
    chmod 600 "$1"
}

need_ca() {
    [[ -f $DIR/ca.crt && -f $DIR/ca.key ]] || die "no CA in $DIR: run '$PROG --dir $DIR init' first"
}

# sign KEY CSR_SUBJECT EXTFILE OUT: issue a leaf certificate from the CA.
sign() {
    local key=$1 subj=$2 ext=$3 out=$4 csr
    csr=$(mktemp)
    openssl req -new -key "$key" -subj "$subj" -out "$csr"
    # A random serial per certificate, so reissuing never repeats one.
    openssl x509 -req -in "$csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days "$LEAF_DAYS" -sha256 \
        -extfile "$ext" -out "$out" 2>/dev/null
    rm -f "$csr"
    chmod 644 "$out"
}

# The receiver binds a client certificate to a host id through its DNS SAN,
# so a host id must be a DNS name (same rule as the receiver's ids.rs).
valid_host_id() {
    local id=$1 label labels last
    [[ ${#id} -ge 1 && ${#id} -le 128 ]] || return 1
    [[ $id =~ ^[A-Za-z0-9.-]+$ ]] || return 1
    IFS=. read -r -a labels <<<"$id"
    # read drops a trailing empty field: "a." must still fail.
    [[ $id != *. && $id != .* && $id != *..* ]] || return 1
    for label in "${labels[@]}"; do
        [[ ${#label} -ge 1 && ${#label} -le 63 ]] || return 1
        [[ $label != -* && $label != *- ]] || return 1
    done
    last=${labels[-1]}
    [[ ! $last =~ ^[0-9]+$ ]] || return 1
}

cmd_init() {
    [[ $# -eq 0 ]] || die "init takes no arguments"
    if [[ -e $DIR/ca.key || -e $DIR/ca.crt ]]; then
        die "$DIR already holds a CA (ca.key/ca.crt); refusing to replace it: every issued certificate depends on it"
    fi
    mkdir -p "$DIR/hosts"
    chmod 700 "$DIR"
    new_key "$DIR/ca.key"
    openssl req -new -x509 -key "$DIR/ca.key" -sha256 -days "$CA_DAYS" \
        -subj "/CN=CIS490 lab CA $(date -u +%Y-%m-%d)" \
        -set_serial "0x$(openssl rand -hex 16)" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" \
        -out "$DIR/ca.crt"
    chmod 644 "$DIR/ca.crt"
    echo "CA: $DIR/ca.crt (key $DIR/ca.key: keep it here, copy only ca.crt)"
}

cmd_server() {
    [[ $# -ge 1 ]] || die "server needs at least one DNS name or IP address"
    need_ca
    local sans=() name ext san_list
    for name in "$@"; do
        # IPv4 or IPv6 literal -> IP SAN; anything else must be a DNS name.
        if [[ $name =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ || $name == *:* ]]; then
            sans+=("IP:$name")
        elif [[ $name =~ ^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]]; then
            sans+=("DNS:$name")
        else
            die "'$name' is neither a DNS name nor an IP address"
        fi
    done
    san_list=$(IFS=,; printf '%s' "${sans[*]}")
    ext=$(mktemp)
    cat >"$ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$san_list
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
    new_key "$DIR/server.key.new"
    sign "$DIR/server.key.new" "/CN=$1" "$ext" "$DIR/server.crt.new"
    rm -f "$ext"
    # Replace the pair together, so a failure never leaves a mismatched
    # certificate and key.
    mv -f "$DIR/server.key.new" "$DIR/server.key"
    mv -f "$DIR/server.crt.new" "$DIR/server.crt"
    echo "server: $DIR/server.crt $DIR/server.key (SANs: $*)"
}

cmd_host() {
    [[ $# -eq 1 ]] || die "host takes exactly one HOST_ID"
    local id=$1 ext token hash
    valid_host_id "$id" || die "'$id' is not a valid host id: it must be a DNS name (letters, digits, hyphens; labels of 1-63 characters joined by dots; no leading or trailing hyphen; last label not all digits; at most 128 characters)"
    need_ca
    mkdir -p "$DIR/hosts"
    if [[ -e $DIR/hosts/$id.key || -e $DIR/hosts/$id.token ]]; then
        die "$DIR/hosts/$id.* exists; remove those files to reissue"
    fi
    ext=$(mktemp)
    cat >"$ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=DNS:$id
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
    new_key "$DIR/hosts/$id.key"
    sign "$DIR/hosts/$id.key" "/CN=$id" "$ext" "$DIR/hosts/$id.crt"
    rm -f "$ext"
    # 32 random bytes as hex; the receiver keeps only its sha256.
    token=$(openssl rand -hex 32)
    printf '%s\n' "$token" >"$DIR/hosts/$id.token"
    chmod 600 "$DIR/hosts/$id.token"
    hash=$(printf '%s' "$token" | openssl dgst -sha256 -r | cut -d' ' -f1)
    {
        echo "host: $DIR/hosts/$id.crt $DIR/hosts/$id.key $DIR/hosts/$id.token"
        echo "paste under [hosts] in the receiver's receiver.toml:"
    } >&2
    printf '"%s" = "%s"\n' "$id" "$hash"
}

# hash-token FILE [HOST_ID]: the [hosts] line for an existing token. The
# receiver hashes the token as the shipper sends it: the file's content with
# surrounding whitespace trimmed (src/auth.rs, Token::new).
cmd_hash_token() {
    [[ $# -ge 1 && $# -le 2 ]] || die "hash-token takes FILE [HOST_ID]"
    local file=$1 id token
    [[ -f $file ]] || die "$file: not a regular file"
    id=${2:-$(basename "$file" .token)}
    valid_host_id "$id" || die "'$id' is not a valid host id (give it as the second argument)"
    token=$(<"$file")
    # Surrounding whitespace only, as the shipper trims it.
    token=${token#"${token%%[![:space:]]*}"}
    token=${token%"${token##*[![:space:]]}"}
    [[ -n $token ]] || die "$file holds no token"
    [[ $token =~ ^[A-Za-z0-9._~+/=-]+$ ]] ||
        die "$file: a token is one word of letters, digits and -._~+/= (the shipper refuses anything else)"
    printf '"%s" = "%s"\n' "$id" "$(printf '%s' "$token" | openssl dgst -sha256 -r | cut -d' ' -f1)"
}

case $CMD in
    init) cmd_init "$@" ;;
    hash-token) cmd_hash_token "$@" ;;
    server) cmd_server "$@" ;;
    host) cmd_host "$@" ;;
    *) die "unknown command '$CMD' (see --help)" ;;
esac
