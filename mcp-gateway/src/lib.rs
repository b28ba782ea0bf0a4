//! The MCP gateway (Model Context Protocol over Streamable HTTP at `/mcp/v1`).
//!
//! Empty in this release: the next step derives its tools from the same proto registry the REST
//! gateway uses (`worktruck_proto::registry`, `(worktruck.mcp.v1.tool)` options). Like the REST
//! gateway it must stay stateless and own no database.
