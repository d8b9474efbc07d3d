//! `--ping`: walk the whole path to the receiver (DNS, TCP, TLS, auth) and
//! say how each stage went, one line each, shipping nothing.

use std::io::Write;
use std::time::Instant;

use crate::config::ShipperConfig;
use crate::exit;
use crate::protocol::PING_PATH;
use crate::shipper::client::{ClientError, Endpoint};
use crate::tls;

fn ms(t: Instant) -> String {
    format!("{:.1} ms", t.elapsed().as_secs_f64() * 1000.0)
}

/// Runs the check, printing to `out`; returns the exit code.
pub fn run(cfg: &ShipperConfig, ep: &Endpoint, out: &mut dyn Write) -> u8 {
    let fail = |out: &mut dyn Write, e: &ClientError| {
        let _ = writeln!(out, "FAILED at {}: {e}", e.stage());
        let _ = writeln!(out, "  what to check: {}", e.hint());
        exit::UNAVAILABLE
    };
    let t = Instant::now();
    let addrs = match ep.resolve() {
        Ok(a) => a,
        Err(e) => return fail(out, &e),
    };
    let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let _ = writeln!(
        out,
        "resolve   {} -> {} ({})",
        ep.url.host,
        list.join(", "),
        ms(t)
    );
    let t = Instant::now();
    let tcp = match ep.connect(&addrs) {
        Ok(s) => s,
        Err(e) => return fail(out, &e),
    };
    let peer = tcp.peer_addr().map_or("?".into(), |a| a.to_string());
    let _ = writeln!(out, "connect   {peer} ({})", ms(t));
    let t = Instant::now();
    let (mut conn, hs) = match ep.handshake(tcp) {
        Ok(c) => c,
        Err(e) => return fail(out, &e),
    };
    let cert = hs
        .server_cert
        .as_deref()
        .and_then(tls::summarize)
        .map_or_else(
            || "certificate details unavailable".to_owned(),
            |s| format!("server certificate {}, expires {}", s.subject, s.not_after),
        );
    let client = if cfg.client_auth.is_some() {
        "client certificate sent"
    } else {
        "no client certificate"
    };
    let _ = writeln!(
        out,
        "tls       {} {}; {cert}; {client} ({})",
        hs.protocol,
        hs.cipher,
        ms(t)
    );
    let t = Instant::now();
    let auth = format!("Bearer {}", cfg.token.expose());
    let resp = conn.request(
        "POST",
        PING_PATH,
        &ep.url.authority(),
        &[("Authorization", &auth), ("Content-Length", "0")],
        None,
        &mut |_| {},
    );
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return fail(out, &e),
    };
    conn.close();
    match resp.status {
        200 => {
            let r = resp.reply.unwrap_or_default();
            let _ = writeln!(
                out,
                "auth      {} (receiver {}, server time {}) ({})",
                r.host_id
                    .as_deref()
                    .map_or("accepted".to_owned(), |h| format!("authenticated as {h}")),
                r.version.as_deref().unwrap_or("?"),
                r.server_time.as_deref().unwrap_or("?"),
                ms(t)
            );
            match r.host_id.as_deref() {
                // Another implementation of the protocol may not say; the
                // credentials were accepted, which is what ping checks.
                None => {
                    let _ = writeln!(
                        out,
                        "warning   receiver did not say which host it authenticated; cannot check that token_file belongs to {}",
                        cfg.host_id
                    );
                }
                Some(h) if h != cfg.host_id => {
                    let _ = writeln!(
                        out,
                        "FAILED at auth: the token authenticates as {h}, but host_id is {}\n  what to check: token_file belongs to another host, or host_id is wrong",
                        cfg.host_id
                    );
                    return exit::NOPERM;
                }
                Some(_) => {}
            }
            let _ = writeln!(
                out,
                "ok        https://{} is ready for {}",
                ep.url.authority(),
                cfg.host_id
            );
            exit::OK
        }
        401 | 403 => {
            let _ = writeln!(
                out,
                "FAILED at auth: receiver answered {}: {}",
                resp.status,
                resp.explain()
            );
            let _ = writeln!(
                out,
                "  what to check: {}",
                if resp.status == 401 {
                    "token_file must hold this host's token, and the receiver's [hosts] its sha256"
                } else {
                    "the client certificate (cert_file) must be issued for this host_id, the same host the token belongs to"
                }
            );
            exit::NOPERM
        }
        s => {
            let _ = writeln!(
                out,
                "FAILED at auth: receiver answered {s}: {}",
                resp.explain()
            );
            let _ = writeln!(
                out,
                "  what to check: the receiver's log; is `receiver` pointing at cis490-receiver?"
            );
            if s >= 500 {
                exit::TEMPFAIL
            } else {
                exit::UNAVAILABLE
            }
        }
    }
}
