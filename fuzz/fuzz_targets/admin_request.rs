//! Arbitrary request lines for the operator's endpoint: routing, action parsing and the
//! token check must never panic, and an action route is only ever a POST.
#![no_main]

use ironmatch::admin::{Method, Route, authorize, route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (url, authorization) = text.split_once('\n').unwrap_or((&text, ""));
    let method = match m % 4 {
        0 => Method::GET,
        1 => Method::POST,
        2 => Method::HEAD,
        _ => Method::PUT,
    };
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    if let Ok(Route::Action(_)) = route(&method, path, query) {
        assert_eq!(method, Method::POST);
    }
    let _ = authorize(Some("token"), Some(authorization));
});
