#ifndef MOONGATE_CTLSSHIMS_H
#define MOONGATE_CTLSSHIMS_H

/* The two BoringSSL calls that name a connection's negotiated cipher suite, which swift-nio-ssl
 * (whose BoringSSL is linked into Moongate, with its symbol prefix) does not expose. `ssl` is
 * the connection's `SSL *`. */
const void *CNIOBoringSSL_SSL_get_current_cipher(const void *ssl);
const char *CNIOBoringSSL_SSL_CIPHER_standard_name(const void *cipher);

/* The IETF name of the cipher suite `ssl` negotiated ("TLS_AES_128_GCM_SHA256"), or NULL before
 * the handshake. */
static inline const char *moongate_tls_cipher_name(const void *ssl) {
    const void *cipher = CNIOBoringSSL_SSL_get_current_cipher(ssl);
    return cipher ? CNIOBoringSSL_SSL_CIPHER_standard_name(cipher) : (const char *)0;
}

#endif
