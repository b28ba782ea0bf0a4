//! Compiles every `.proto` under this folder with protox (no external `protoc`), writes the
//! encoded descriptor set (with custom options: `google.api.http`, `worktruck.mcp.v1.tool`) to
//! `OUT_DIR/descriptor.bin`, and generates tonic/prost code that decodes through
//! `codec::Checked` (src/codec.rs).

use std::path::PathBuf;

const FILES: &[&str] = &[
    "google/api/httpbody.proto",
    "worktruck/common/v1/common.proto",
    "worktruck/common/v1/options.proto",
    "worktruck/common/v1/links.proto",
    "worktruck/mcp/v1/options.proto",
    "worktruck/tenants/v1/tenants.proto",
    "worktruck/contacts/v1/contacts.proto",
    "worktruck/notes/v1/notes.proto",
    "worktruck/crm/v1/crm.proto",
    "worktruck/tasks/v1/tasks.proto",
    "worktruck/calendar/v1/calendar.proto",
    "worktruck/agents/v1/agents.proto",
    "worktruck/apps/v1/apps.proto",
    "worktruck/webhooks/v1/webhooks.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=worktruck");
    println!("cargo:rerun-if-changed=google");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut compiler = protox::Compiler::new(["."])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(FILES)?;
    // `file_descriptor_set()` drops extension options; the runtime registry needs them, so the
    // bytes the gateways read come from `encode_file_descriptor_set()`.
    std::fs::write(out.join("descriptor.bin"), compiler.encode_file_descriptor_set())?;
    // Type names let the checking codec find each message's descriptor (`prost::Name`).
    let mut config = prost_build::Config::new();
    config.enable_type_names();
    // `google.api.HttpBody` is written by hand in lib.rs (see there).
    config.extern_path(".google.api", "crate::google::api");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Every generated server and client decodes through the checking codec, so every
        // service refuses what no service may store (NUL, documents too deep to read back).
        .codec_path("crate::codec::Checked")
        .compile_fds_with_config(compiler.file_descriptor_set(), config)?;
    Ok(())
}
