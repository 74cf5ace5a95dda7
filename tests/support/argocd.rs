//! The Argo CD health check (deploy/argocd/health.lua) run on Lua 5.1, Argo CD's gopher-lua
//! dialect: by the Argo CD tests on planned statuses and by the end-to-end tests on statuses read
//! back from the API server.

use mlua::{Lua, LuaSerdeExt, SerializeOptions};
use serde_json::Value;

pub fn health_script() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/argocd/health.lua"
    ))
    .expect("health.lua")
}

/// Runs the health check on `object` as Argo CD does: the object is the global `obj` (JSON null
/// is nil), the chunk returns {status, message}.
pub fn health(object: &Value) -> (String, String) {
    let lua = Lua::new();
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let obj = lua.to_value_with(object, options).expect("to Lua");
    lua.globals().set("obj", obj).unwrap();
    let result: mlua::Table = lua
        .load(health_script())
        .set_name("health.lua")
        .eval()
        .unwrap_or_else(|e| panic!("health.lua failed on {object}: {e}"));
    let status: String = result.get("status").unwrap();
    let message: String = result.get("message").unwrap_or_default();
    assert!(
        [
            "Healthy",
            "Progressing",
            "Degraded",
            "Suspended",
            "Missing",
            "Unknown"
        ]
        .contains(&status.as_str()),
        "{status} is not an Argo CD health status"
    );
    (status, message)
}
