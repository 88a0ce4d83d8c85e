//! A lichen.wasm function: reads `{"celsius": N}` events, publishes
//! `{"fahrenheit": F, "from": TOPIC}` to the topic in its configuration key `outputTopic`,
//! and returns the converted value as its result.
//!
//! The host interface (lichen-wasm's crate documentation): export `memory` (the toolchain
//! does), `lichen_alloc` and `lichen_handle`; import `lichen.publish/config/log/set_result`.
//! stdout/stderr (println!) go to the component's log through WASI.

use serde_json::{json, Value};

#[link(wasm_import_module = "lichen")]
extern "C" {
    fn publish(topic: *const u8, topic_len: usize, payload: *const u8, payload_len: usize) -> i32;
    fn config(key: *const u8, key_len: usize, buf: *mut u8, cap: usize) -> i32;
    fn log(level: i32, msg: *const u8, len: usize);
    fn set_result(ptr: *const u8, len: usize) -> i32;
}

/// The host writes the topic and the payload into buffers it asks for here. They are
/// leaked on purpose and reclaimed in `lichen_handle`.
#[no_mangle]
pub extern "C" fn lichen_alloc(len: usize) -> *mut u8 {
    let mut buf = Vec::<u8>::with_capacity(len.max(1));
    let ptr = buf.as_mut_ptr();
    std::mem::forget(buf);
    ptr
}

unsafe fn take(ptr: *mut u8, len: usize) -> Vec<u8> {
    Vec::from_raw_parts(ptr, len, len.max(1))
}

fn read_config(key: &str) -> Option<Value> {
    let mut buf = vec![0u8; 256];
    loop {
        let n = unsafe { config(key.as_ptr(), key.len(), buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            return None;
        }
        if n as usize <= buf.len() {
            return serde_json::from_slice(&buf[..n as usize]).ok();
        }
        buf.resize(n as usize, 0);
    }
}

fn warn(message: &str) {
    unsafe { log(3, message.as_ptr(), message.len()) }
}

#[no_mangle]
pub extern "C" fn lichen_handle(tp: *mut u8, tl: usize, pp: *mut u8, pl: usize) -> i32 {
    let topic = String::from_utf8(unsafe { take(tp, tl) }).unwrap_or_default();
    let payload = unsafe { take(pp, pl) };
    let Some(celsius) = serde_json::from_slice::<Value>(&payload)
        .ok()
        .and_then(|v| v.get("celsius").and_then(Value::as_f64))
    else {
        let error = br#"{"error": "expected {\"celsius\": number}"}"#;
        unsafe { set_result(error.as_ptr(), error.len()) };
        return 1;
    };
    let fahrenheit = celsius * 9.0 / 5.0 + 32.0;
    println!("{topic}: {celsius} C = {fahrenheit} F");
    let out_topic = read_config("outputTopic")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "temperature/fahrenheit".to_string());
    let message = json!({"fahrenheit": fahrenheit, "from": topic}).to_string();
    let rc = unsafe { publish(out_topic.as_ptr(), out_topic.len(), message.as_ptr(), message.len()) };
    if rc != 0 {
        warn(&format!("publish to {out_topic} refused ({rc}): check accessControl"));
    }
    let result = fahrenheit.to_string();
    unsafe { set_result(result.as_ptr(), result.len()) };
    0
}
