#!/usr/bin/env bash
# Create everything a secure local deployment needs, for local use only:
#   <deploy-dir>/certs/ca.crt, ca.key            a private certificate authority (CA)
#   <deploy-dir>/certs/server.crt, server.key    the SuperLink's TLS certificate, signed by the CA,
#                                                valid for 127.0.0.1, ::1 and localhost
#   <deploy-dir>/keys/node-<i>, node-<i>.pub     one ECDSA P-384 key pair per SuperNode (OpenSSH
#                                                format), used for SuperNode authentication
#
# Usage: scripts/deploy/make_certs.sh [--deploy-dir DIR] [--num-nodes N] [--days D]
#   --deploy-dir  output directory (default: $FEDRDSKD_DEPLOY_DIR or <repo>/.deploy)
#   --num-nodes   number of SuperNode key pairs node-0 .. node-(N-1) (default: 2)
#   --days        validity of the CA and server certificate in days (default: 365)
#
# Existing files are kept, so running it again with a larger --num-nodes only adds keys.
# A key that exists but is never registered (configure_federation.sh) belongs to an
# *unknown* node: the SuperLink refuses it. Private keys are created with mode 600 and
# must never be committed (.deploy/ is git-ignored).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

num_nodes=2
days=365
while [ $# -gt 0 ]; do
    case "$1" in
        --deploy-dir) DEPLOY_DIR="$2"; shift 2 ;;
        --num-nodes) num_nodes="$2"; shift 2 ;;
        --days) days="$2"; shift 2 ;;
        *) die "unknown argument '$1' (allowed: --deploy-dir DIR, --num-nodes N, --days D)" ;;
    esac
done
[[ "$num_nodes" =~ ^[0-9]+$ ]] || die "--num-nodes must be a non-negative integer, got '$num_nodes'"
[[ "$days" =~ ^[1-9][0-9]*$ ]] || die "--days must be a positive integer, got '$days'"

need_command openssl
need_command "$FLWR_PYTHON"
init_deploy_dir
mkdir -p "$CERT_DIR" "$KEY_DIR"
umask 077

make_ca() {
    [ -f "$CERT_DIR/ca.crt" ] && return
    openssl ecparam -name secp384r1 -genkey -noout -out "$CERT_DIR/ca.key"
    openssl req -x509 -new -sha384 -key "$CERT_DIR/ca.key" -days "$days" \
        -subj "/CN=fedrdskd local CA" -out "$CERT_DIR/ca.crt" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign"
    rm -f "$CERT_DIR/server.crt"  # a new CA invalidates any older server certificate
    echo "created CA: $CERT_DIR/ca.crt"
}

make_server_cert() {
    [ -f "$CERT_DIR/server.crt" ] && return
    local extensions="$CERT_DIR/server.ext"
    cat >"$extensions" <<EOF
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, IP:::1, DNS:localhost
EOF
    openssl ecparam -name secp384r1 -genkey -noout -out "$CERT_DIR/server.key"
    openssl req -new -sha384 -key "$CERT_DIR/server.key" -subj "/CN=localhost" \
        -out "$CERT_DIR/server.csr"
    openssl x509 -req -sha384 -in "$CERT_DIR/server.csr" -CA "$CERT_DIR/ca.crt" \
        -CAkey "$CERT_DIR/ca.key" -CAcreateserial -days "$days" \
        -extfile "$extensions" -out "$CERT_DIR/server.crt" 2>/dev/null
    rm -f "$CERT_DIR/server.csr" "$extensions"
    openssl verify -CAfile "$CERT_DIR/ca.crt" "$CERT_DIR/server.crt" >/dev/null
    echo "created SuperLink certificate: $CERT_DIR/server.crt (127.0.0.1, ::1, localhost)"
}

# Flower reads SuperNode keys with `load_ssh_private_key`: OpenSSH format, NIST EC curve.
# openssl cannot write that format; the `cryptography` package (a Flower dependency) can.
make_node_key() {
    local private_key="$KEY_DIR/$1"
    [ -f "$private_key" ] && return
    "$FLWR_PYTHON" - "$private_key" <<'EOF'
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

path = Path(sys.argv[1])
key = ec.generate_private_key(ec.SECP384R1())
path.write_bytes(key.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.OpenSSH,
    serialization.NoEncryption(),
))
path.chmod(0o600)
public = key.public_key().public_bytes(
    serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
)
path.with_name(path.name + ".pub").write_bytes(public + f" {path.name}\n".encode())
EOF
    echo "created SuperNode key pair: $private_key(.pub)"
}

make_ca
make_server_cert
for ((index = 0; index < num_nodes; index++)); do
    make_node_key "node-$index"
done
chmod 644 "$CERT_DIR/ca.crt" "$CERT_DIR/server.crt" "$KEY_DIR"/*.pub 2>/dev/null || true
