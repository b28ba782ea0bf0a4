use super::*;

fn registry() -> Registry {
    Registry::embedded().expect("the embedded descriptor set is valid")
}

fn route<'a>(r: &'a Registry, rpc: &str) -> Vec<&'a Route> {
    r.routes().iter().filter(|x| x.rpc.name() == rpc).collect()
}

#[test]
fn contacts_and_tenants_routes_are_read_from_the_http_rules() {
    let r = registry();
    let expect = [
        (
            "CreateContact",
            HttpMethod::Post,
            "/api/v1/contacts",
            RequestBody::Whole,
        ),
        (
            "GetContact",
            HttpMethod::Get,
            "/api/v1/contacts/{id}",
            RequestBody::None,
        ),
        (
            "UpdateContact",
            HttpMethod::Patch,
            "/api/v1/contacts/{id}",
            RequestBody::Whole,
        ),
        (
            "DeleteContact",
            HttpMethod::Delete,
            "/api/v1/contacts/{id}",
            RequestBody::None,
        ),
        (
            "RestoreContact",
            HttpMethod::Post,
            "/api/v1/contacts/{id}/restore",
            RequestBody::Whole,
        ),
        (
            "ListContactLinks",
            HttpMethod::Get,
            "/api/v1/contacts/{id}/links",
            RequestBody::None,
        ),
        (
            "ListContacts",
            HttpMethod::Get,
            "/api/v1/contacts",
            RequestBody::None,
        ),
        (
            "GetContactHistory",
            HttpMethod::Get,
            "/api/v1/contacts/{id}/history",
            RequestBody::None,
        ),
        (
            "DiffContact",
            HttpMethod::Get,
            "/api/v1/contacts/{id}/diff",
            RequestBody::None,
        ),
        (
            "GetContactTimeline",
            HttpMethod::Get,
            "/api/v1/contacts/{id}/timeline",
            RequestBody::None,
        ),
        (
            "FindContactByChannel",
            HttpMethod::Get,
            "/api/v1/contacts/find-by-channel",
            RequestBody::None,
        ),
        (
            "ListUpcomingDates",
            HttpMethod::Get,
            "/api/v1/contacts/upcoming-dates",
            RequestBody::None,
        ),
        (
            "ListDueForContact",
            HttpMethod::Get,
            "/api/v1/contacts/due-for-contact",
            RequestBody::None,
        ),
        (
            "GetContactSettings",
            HttpMethod::Get,
            "/api/v1/contacts/settings",
            RequestBody::None,
        ),
        (
            "UpdateContactSettings",
            HttpMethod::Patch,
            "/api/v1/contacts/settings",
            RequestBody::Whole,
        ),
        (
            "AddChannel",
            HttpMethod::Post,
            "/api/v1/contacts/{contact_id}/channels",
            RequestBody::Whole,
        ),
        (
            "ListChannels",
            HttpMethod::Get,
            "/api/v1/contacts/{contact_id}/channels",
            RequestBody::None,
        ),
        (
            "GetChannel",
            HttpMethod::Get,
            "/api/v1/contacts/{contact_id}/channels/{id}",
            RequestBody::None,
        ),
        (
            "UpdateChannel",
            HttpMethod::Patch,
            "/api/v1/contacts/{contact_id}/channels/{id}",
            RequestBody::Whole,
        ),
        (
            "DeleteChannel",
            HttpMethod::Delete,
            "/api/v1/contacts/{contact_id}/channels/{id}",
            RequestBody::None,
        ),
        (
            "AddAddress",
            HttpMethod::Post,
            "/api/v1/contacts/{contact_id}/addresses",
            RequestBody::Whole,
        ),
        (
            "ListAddresses",
            HttpMethod::Get,
            "/api/v1/contacts/{contact_id}/addresses",
            RequestBody::None,
        ),
        (
            "GetAddress",
            HttpMethod::Get,
            "/api/v1/contacts/{contact_id}/addresses/{id}",
            RequestBody::None,
        ),
        (
            "UpdateAddress",
            HttpMethod::Patch,
            "/api/v1/contacts/{contact_id}/addresses/{id}",
            RequestBody::Whole,
        ),
        (
            "DeleteAddress",
            HttpMethod::Delete,
            "/api/v1/contacts/{contact_id}/addresses/{id}",
            RequestBody::None,
        ),
        (
            "AddDate",
            HttpMethod::Post,
            "/api/v1/contacts/{contact_id}/dates",
            RequestBody::Whole,
        ),
        (
            "ListDates",
            HttpMethod::Get,
            "/api/v1/contacts/{contact_id}/dates",
            RequestBody::None,
        ),
        (
            "GetDate",
            HttpMethod::Get,
            "/api/v1/contacts/{contact_id}/dates/{id}",
            RequestBody::None,
        ),
        (
            "UpdateDate",
            HttpMethod::Put,
            "/api/v1/contacts/{contact_id}/dates/{id}",
            RequestBody::Whole,
        ),
        (
            "DeleteDate",
            HttpMethod::Delete,
            "/api/v1/contacts/{contact_id}/dates/{id}",
            RequestBody::None,
        ),
        (
            "AddAffiliation",
            HttpMethod::Post,
            "/api/v1/contacts/{contact_id}/affiliations",
            RequestBody::Whole,
        ),
        (
            "ListAffiliations",
            HttpMethod::Get,
            "/api/v1/contacts/{contact_id}/affiliations",
            RequestBody::None,
        ),
        (
            "GetAffiliation",
            HttpMethod::Get,
            "/api/v1/contacts/{contact_id}/affiliations/{id}",
            RequestBody::None,
        ),
        (
            "UpdateAffiliation",
            HttpMethod::Patch,
            "/api/v1/contacts/{contact_id}/affiliations/{id}",
            RequestBody::Whole,
        ),
        (
            "DeleteAffiliation",
            HttpMethod::Delete,
            "/api/v1/contacts/{contact_id}/affiliations/{id}",
            RequestBody::None,
        ),
        (
            "ListOrganizationMembers",
            HttpMethod::Get,
            "/api/v1/contacts/{contact_id}/members",
            RequestBody::None,
        ),
        (
            "CreateRelationship",
            HttpMethod::Post,
            "/api/v1/contacts/{contact_id}/relationships",
            RequestBody::Whole,
        ),
        (
            "ListRelationships",
            HttpMethod::Get,
            "/api/v1/contacts/{contact_id}/relationships",
            RequestBody::None,
        ),
        (
            "GetRelationship",
            HttpMethod::Get,
            "/api/v1/contacts/{contact_id}/relationships/{id}",
            RequestBody::None,
        ),
        (
            "UpdateRelationship",
            HttpMethod::Patch,
            "/api/v1/contacts/{contact_id}/relationships/{id}",
            RequestBody::Whole,
        ),
        (
            "DeleteRelationship",
            HttpMethod::Delete,
            "/api/v1/contacts/{contact_id}/relationships/{id}",
            RequestBody::None,
        ),
        (
            "CreateRelationshipType",
            HttpMethod::Post,
            "/api/v1/relationship-types",
            RequestBody::Whole,
        ),
        (
            "ListRelationshipTypes",
            HttpMethod::Get,
            "/api/v1/relationship-types",
            RequestBody::None,
        ),
        (
            "DeleteRelationshipType",
            HttpMethod::Delete,
            "/api/v1/relationship-types/{id}",
            RequestBody::None,
        ),
        (
            "LogInteraction",
            HttpMethod::Post,
            "/api/v1/contacts/{contact_id}/interactions",
            RequestBody::Whole,
        ),
        (
            "ListInteractions",
            HttpMethod::Get,
            "/api/v1/contacts/{contact_id}/interactions",
            RequestBody::None,
        ),
        (
            "GetInteraction",
            HttpMethod::Get,
            "/api/v1/contacts/{contact_id}/interactions/{id}",
            RequestBody::None,
        ),
        (
            "UpdateInteraction",
            HttpMethod::Patch,
            "/api/v1/contacts/{contact_id}/interactions/{id}",
            RequestBody::Whole,
        ),
        (
            "DeleteInteraction",
            HttpMethod::Delete,
            "/api/v1/contacts/{contact_id}/interactions/{id}",
            RequestBody::None,
        ),
        (
            "CreateTag",
            HttpMethod::Post,
            "/api/v1/contact-tags",
            RequestBody::Whole,
        ),
        (
            "ListTags",
            HttpMethod::Get,
            "/api/v1/contact-tags",
            RequestBody::None,
        ),
        (
            "GetTag",
            HttpMethod::Get,
            "/api/v1/contact-tags/{id}",
            RequestBody::None,
        ),
        (
            "UpdateTag",
            HttpMethod::Patch,
            "/api/v1/contact-tags/{id}",
            RequestBody::Whole,
        ),
        (
            "DeleteTag",
            HttpMethod::Delete,
            "/api/v1/contact-tags/{id}",
            RequestBody::None,
        ),
        (
            "TagContact",
            HttpMethod::Post,
            "/api/v1/contacts/{contact_id}/tags",
            RequestBody::Whole,
        ),
        (
            "ListContactTags",
            HttpMethod::Get,
            "/api/v1/contacts/{contact_id}/tags",
            RequestBody::None,
        ),
        (
            "UntagContact",
            HttpMethod::Delete,
            "/api/v1/contacts/{contact_id}/tags/{id}",
            RequestBody::None,
        ),
        (
            "CreateGroup",
            HttpMethod::Post,
            "/api/v1/contact-groups",
            RequestBody::Whole,
        ),
        (
            "ListGroups",
            HttpMethod::Get,
            "/api/v1/contact-groups",
            RequestBody::None,
        ),
        (
            "GetGroup",
            HttpMethod::Get,
            "/api/v1/contact-groups/{id}",
            RequestBody::None,
        ),
        (
            "UpdateGroup",
            HttpMethod::Patch,
            "/api/v1/contact-groups/{id}",
            RequestBody::Whole,
        ),
        (
            "DeleteGroup",
            HttpMethod::Delete,
            "/api/v1/contact-groups/{id}",
            RequestBody::None,
        ),
        (
            "AddGroupMembers",
            HttpMethod::Post,
            "/api/v1/contact-groups/{id}/members",
            RequestBody::Whole,
        ),
        (
            "RemoveGroupMembers",
            HttpMethod::Post,
            "/api/v1/contact-groups/{id}/members:remove",
            RequestBody::Whole,
        ),
        (
            "ImportContacts",
            HttpMethod::Post,
            "/api/v1/contacts/import",
            RequestBody::Whole,
        ),
        (
            "GetImportJob",
            HttpMethod::Get,
            "/api/v1/contacts/imports/{id}",
            RequestBody::None,
        ),
        (
            "ExportContactVcard",
            HttpMethod::Get,
            "/api/v1/contacts/{id}/vcard",
            RequestBody::None,
        ),
        (
            "ExportContacts",
            HttpMethod::Get,
            "/api/v1/contacts/export.vcf",
            RequestBody::None,
        ),
        (
            "ListDuplicates",
            HttpMethod::Get,
            "/api/v1/contacts/duplicates",
            RequestBody::None,
        ),
        (
            "PreviewMerge",
            HttpMethod::Post,
            "/api/v1/contacts/merge/preview",
            RequestBody::Whole,
        ),
        (
            "MergeContacts",
            HttpMethod::Post,
            "/api/v1/contacts/merge",
            RequestBody::Whole,
        ),
        (
            "UndoMerge",
            HttpMethod::Post,
            "/api/v1/contacts/merges/{id}/undo",
            RequestBody::Whole,
        ),
        (
            "GetTenant",
            HttpMethod::Get,
            "/api/v1/tenant",
            RequestBody::None,
        ),
        (
            "CreateApiKey",
            HttpMethod::Post,
            "/api/v1/api-keys",
            RequestBody::Whole,
        ),
        (
            "ListApiKeys",
            HttpMethod::Get,
            "/api/v1/api-keys",
            RequestBody::None,
        ),
        (
            "GetApiKey",
            HttpMethod::Get,
            "/api/v1/api-keys/{id}",
            RequestBody::None,
        ),
        (
            "RotateApiKey",
            HttpMethod::Post,
            "/api/v1/api-keys/{id}/rotate",
            RequestBody::Whole,
        ),
        (
            "DeleteApiKey",
            HttpMethod::Delete,
            "/api/v1/api-keys/{id}",
            RequestBody::None,
        ),
    ];
    // Every contacts and tenants route is listed above (other services have their own, and
    // may share an RPC name: notes has its own `CreateTag`).
    let ours = |s: &str| s.starts_with("worktruck.contacts.") || s.starts_with("worktruck.tenants.");
    for (rpc, method, path, body) in expect.clone() {
        let found: Vec<&Route> = route(&r, rpc).into_iter().filter(|x| ours(&x.service)).collect();
        assert_eq!(found.len(), 1, "{rpc}");
        assert_eq!(found[0].method, method, "{rpc}");
        assert_eq!(found[0].path.as_str(), path, "{rpc}");
        assert_eq!(found[0].body, body, "{rpc}");
    }
    let get = route(&r, "GetContact")[0];
    assert_eq!(get.service, "worktruck.contacts.v1.ContactsService");
    assert_eq!(
        get.grpc_path,
        "/worktruck.contacts.v1.ContactsService/GetContact"
    );
    assert_eq!(get.path.variables().collect::<Vec<_>>(), ["id"]);
    assert_eq!(r.routes().iter().filter(|x| ours(&x.service)).count(), expect.len());
}

#[test]
fn internal_rpcs_get_no_route_and_no_tool() {
    let r = registry();
    for rpc in ["AuthenticateApiKey", "CreateTenant"] {
        assert!(route(&r, rpc).is_empty(), "{rpc}");
        assert!(r.tools().iter().all(|t| t.rpc.name() != rpc));
    }
}

#[test]
fn contacts_tools_carry_their_annotations() {
    let r = registry();
    let names: Vec<&str> = r.tools().iter().map(|t| t.name.as_str()).filter(|n| n.starts_with("contacts_")).collect();
    assert_eq!(
        names,
        [
            "contacts_create",
            "contacts_get",
            "contacts_update",
            "contacts_delete",
            "contacts_search",
            "contacts_find_by_channel",
            "contacts_due_for_contact",
            "contacts_add_channel",
            "contacts_list_relationships",
            "contacts_log_interaction",
            "contacts_find_duplicates",
            "contacts_merge_preview",
            "contacts_merge"
        ]
    );
    // (name, read_only, destructive, idempotent)
    let expect = [
        ("contacts_create", false, false, false),
        ("contacts_get", true, false, true),
        ("contacts_update", false, false, true),
        ("contacts_delete", false, true, true),
        ("contacts_search", true, false, true),
        ("contacts_find_by_channel", true, false, true),
        ("contacts_due_for_contact", true, false, true),
        ("contacts_add_channel", false, false, false),
        ("contacts_list_relationships", true, false, true),
        ("contacts_log_interaction", false, false, false),
        ("contacts_find_duplicates", true, false, true),
        ("contacts_merge_preview", true, false, true),
        ("contacts_merge", false, true, false),
    ];
    for (name, ro, destructive, idempotent) in expect {
        let t = r.tool(name).unwrap();
        assert_eq!(
            (t.read_only, t.destructive, t.idempotent),
            (ro, destructive, idempotent),
            "{name}"
        );
        assert_eq!(t.toolset, "contacts");
        assert!(t.title.is_some());
        assert!(t.description.is_some());
    }
    let search = r.tool("contacts_search").unwrap();
    assert_eq!(search.rpc.name(), "ListContacts");
    assert_eq!(search.title.as_deref(), Some("Search contacts"));
    assert_eq!(
        search.grpc_path,
        "/worktruck.contacts.v1.ContactsService/ListContacts"
    );
}

#[test]
fn comments_and_field_behaviours_are_read() {
    let r = registry();
    let get = &route(&r, "GetContact")[0].rpc;
    assert!(
        r.method_comment(get)
            .unwrap()
            .starts_with("Returns one contact")
    );
    let contact = r
        .pool()
        .get_message_by_name("worktruck.contacts.v1.Contact")
        .unwrap();
    assert_eq!(
        r.message_comment(&contact),
        Some("A person, organization or group.")
    );
    let id = contact.get_field_by_name("id").unwrap();
    assert_eq!(r.field_comment(&id), Some("Contact id (UUID)."));
    assert!(r.field_behaviors(&id).output_only);
    let kind = r
        .pool()
        .get_enum_by_name("worktruck.contacts.v1.ContactKind")
        .unwrap();
    assert_eq!(r.enum_comment(&kind), Some("What a contact is."));
    let person = kind.get_value_by_name("CONTACT_KIND_PERSON").unwrap();
    assert_eq!(r.enum_value_comment(&person), Some("A person."));
    let create = r
        .pool()
        .get_message_by_name("worktruck.contacts.v1.CreateContactRequest")
        .unwrap();
    assert!(
        r.field_behaviors(&create.get_field_by_name("kind").unwrap())
            .required
    );
    assert_eq!(
        r.field_behaviors(&create.get_field_by_name("bio").unwrap()),
        FieldBehaviors::default()
    );
}

#[test]
fn templates_outside_the_supported_subset_are_refused() {
    let t = PathTemplate::parse("/api/v1/things/{thing.id}:archive").unwrap();
    assert_eq!(t.verb(), Some("archive"));
    assert_eq!(t.variables().collect::<Vec<_>>(), ["thing.id"]);
    let t = PathTemplate::parse("/api/v1/things:batchGet").unwrap();
    assert_eq!(
        t.segments(),
        [
            Segment::Literal("api".into()),
            Segment::Literal("v1".into()),
            Segment::Literal("things".into())
        ]
    );
    assert_eq!(t.verb(), Some("batchGet"));
    assert!(PathTemplate::parse("/x/{id=*}").is_ok());
    for bad in [
        "x",
        "/x/{name=projects/*}",
        "/x/**",
        "/x/*",
        "/x//y",
        "/x/{}",
        "/x/{a}/{a}",
        "/x/{a-b}",
        "/x/y:",
    ] {
        assert!(PathTemplate::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(package_domain("worktruck.contacts.v1"), "contacts");
    assert_eq!(package_domain("worktruck.crm.v2beta"), "crm");
    assert_eq!(package_domain("single"), "single");
}

/// Compiles a scratch proto (with the real vendored imports) and loads it.
fn load_proto(services: &str) -> Result<Registry, RegistryError> {
    let dir = tempfile::tempdir().unwrap();
    let src = format!(
        "syntax = \"proto3\";\npackage t.v1;\nimport \"google/api/annotations.proto\";\n\
         import \"worktruck/mcp/v1/options.proto\";\n\
         message Req {{ string id = 1; Inner inner = 2; repeated string tags = 3; }}\n\
         message Inner {{ string name = 1; }}\nmessage Res {{ string id = 1; }}\n{services}"
    );
    std::fs::write(dir.path().join("t.proto"), src).unwrap();
    let includes = [dir.path(), std::path::Path::new(env!("CARGO_MANIFEST_DIR"))];
    let mut compiler = protox::Compiler::new(includes).unwrap();
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(["t.proto"]).unwrap();
    Registry::load(&compiler.encode_file_descriptor_set())
}

fn rpc(name: &str, rule: &str) -> String {
    format!("rpc {name}(Req) returns (Res) {{ option (google.api.http) = {{ {rule} }}; }}\n")
}

#[test]
fn nested_fields_verbs_and_additional_bindings_load() {
    let r = load_proto(&format!(
        "service S {{ {} rpc T(Req) returns (Res) {{ option (worktruck.mcp.v1.tool) = {{ name: \"t_do\" }}; }} }}",
        rpc("A", "get: \"/a/{inner.name}:peek\" additional_bindings { post: \"/b\" body: \"*\" }")
    ))
    .unwrap();
    let routes = r.routes();
    assert_eq!(routes.len(), 2);
    assert_eq!(
        (routes[0].method, routes[0].path.verb(), routes[0].binding),
        (HttpMethod::Get, Some("peek"), 0)
    );
    assert_eq!(
        (routes[1].method, routes[1].path.as_str(), routes[1].binding),
        (HttpMethod::Post, "/b", 1)
    );
    assert_eq!(
        r.tools()[0].toolset,
        "t",
        "default toolset is the package's domain"
    );
}

#[test]
fn unservable_rules_are_refused_at_load() {
    let cases = [
        (
            rpc("A", "get: \"/a/{id}\"") + &rpc("B", "get: \"/a/{inner.name}\""),
            "duplicate route GET /a/{inner.name}",
        ),
        (rpc("A", "get: \"/a/{id=things/*}\""), "segment pattern"),
        (rpc("A", "get: \"/a/{nope}\""), "'nope' does not exist"),
        (rpc("A", "get: \"/a/{tags}\""), "is repeated"),
        (rpc("A", "get: \"/a/{inner}\""), "is a message"),
        (
            rpc("A", "post: \"/a\" body: \"nope\""),
            "body field 'nope' does not exist",
        ),
        (
            rpc("A", "get: \"/a\" body: \"*\""),
            "GET binding cannot have a body",
        ),
        (
            rpc("A", "get: \"/a\" response_body: \"nope\""),
            "response_body field 'nope'",
        ),
        (
            rpc("A", "custom: { kind: \"HEAD\" path: \"/a\" }"),
            "custom http patterns",
        ),
    ];
    for (services, expected) in cases {
        let err = load_proto(&format!("service S {{ {services} }}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err} should contain {expected}");
    }
    let tool = |n: &str, name: &str| {
        format!(
            "rpc {n}(Req) returns (Res) {{ option (worktruck.mcp.v1.tool) = {{ name: \"{name}\" }}; }}\n"
        )
    };
    let err = load_proto(&format!(
        "service S {{ {} {} }}",
        tool("A", "x"),
        tool("B", "x")
    ))
    .unwrap_err();
    assert!(
        matches!(err, RegistryError::DuplicateTool { ref name, .. } if name == "x"),
        "{err}"
    );
    let err = load_proto(&format!("service S {{ {} }}", tool("A", "bad name"))).unwrap_err();
    assert!(matches!(err, RegistryError::InvalidTool { .. }), "{err}");
}
