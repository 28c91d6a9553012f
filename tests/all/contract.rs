//! The WIT reference (`docs/wit-reference.md`) is generated from the `///` comments of `wit/`
//! and must be current: this test regenerates it and compares. After changing `wit/`, run
//! `UPDATE_WIT_REFERENCE=1 cargo test -p e2e --test all -- contract` and commit the result.

use crate::common::root;
use std::fmt::Write;
use wit_parser::{Docs, Resolve, Type, TypeDefKind, WorldItem};

fn docs(d: &Docs) -> String {
    d.contents.as_deref().map(|c| c.trim().to_string()).unwrap_or_default()
}

/// A type as WIT writes it.
fn ty(r: &Resolve, t: &Type) -> String {
    match t {
        Type::Bool => "bool".into(),
        Type::U8 => "u8".into(),
        Type::U16 => "u16".into(),
        Type::U32 => "u32".into(),
        Type::U64 => "u64".into(),
        Type::S8 => "s8".into(),
        Type::S16 => "s16".into(),
        Type::S32 => "s32".into(),
        Type::S64 => "s64".into(),
        Type::F32 => "f32".into(),
        Type::F64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::ErrorContext => "error-context".into(),
        Type::Id(id) => {
            let def = &r.types[*id];
            if let Some(name) = &def.name {
                return name.clone();
            }
            match &def.kind {
                TypeDefKind::List(t) => format!("list<{}>", ty(r, t)),
                TypeDefKind::Option(t) => format!("option<{}>", ty(r, t)),
                TypeDefKind::Result(res) => {
                    let side = |t: &Option<Type>| t.as_ref().map(|t| ty(r, t)).unwrap_or_else(|| "_".into());
                    format!("result<{}, {}>", side(&res.ok), side(&res.err))
                }
                TypeDefKind::Tuple(t) => {
                    format!("tuple<{}>", t.types.iter().map(|t| ty(r, t)).collect::<Vec<_>>().join(", "))
                }
                TypeDefKind::Type(t) => ty(r, t),
                other => other.as_str().to_string(),
            }
        }
    }
}

/// Markdown for the package in `wit/`: each interface's types and functions, then the worlds.
pub fn reference(wit: &std::path::Path) -> String {
    let mut r = Resolve::default();
    let (pkg, _) = r.push_path(wit).expect("wit/ parses");
    let package = &r.packages[pkg];
    let mut out = String::new();
    let version = package.name.version.as_ref().map(|v| format!("@{v}")).unwrap_or_default();
    let name = format!("{}:{}{version}", package.name.namespace, package.name.name);
    writeln!(out, "# WIT reference: `{name}`\n").unwrap();
    writeln!(
        out,
        "Generated from the `///` comments of [`wit/plugin.wit`](../wit/plugin.wit) by `tests/all/contract.rs`; \
         CI fails when it is out of date. Do not edit by hand.\n"
    )
    .unwrap();
    writeln!(out, "{}\n", docs(&package.docs)).unwrap();
    for (iname, id) in &package.interfaces {
        let i = &r.interfaces[*id];
        writeln!(out, "## interface `{iname}`\n\n{}\n", docs(&i.docs)).unwrap();
        for (tname, tid) in &i.types {
            let def = &r.types[*tid];
            if matches!(def.owner, wit_parser::TypeOwner::Interface(owner) if owner != *id) {
                continue; // a `use` of another interface's type
            }
            if let TypeDefKind::Type(Type::Id(other)) = def.kind {
                if r.types[other].name.as_deref() == Some(tname.as_str()) {
                    continue; // `use types.{x}` re-export
                }
            }
            writeln!(out, "### {} `{tname}`\n\n{}\n", def.kind.as_str(), docs(&def.docs)).unwrap();
            match &def.kind {
                TypeDefKind::Record(rec) => {
                    writeln!(out, "| field | type | |\n| --- | --- | --- |").unwrap();
                    for f in &rec.fields {
                        writeln!(
                            out,
                            "| `{}` | `{}` | {} |",
                            f.name,
                            ty(&r, &f.ty),
                            docs(&f.docs).replace('\n', " ")
                        )
                        .unwrap();
                    }
                    writeln!(out).unwrap();
                }
                TypeDefKind::Variant(v) => {
                    writeln!(out, "| case | payload | |\n| --- | --- | --- |").unwrap();
                    for c in &v.cases {
                        let payload = c.ty.as_ref().map(|t| format!("`{}`", ty(&r, t))).unwrap_or_default();
                        writeln!(out, "| `{}` | {payload} | {} |", c.name, docs(&c.docs).replace('\n', " "))
                            .unwrap();
                    }
                    writeln!(out).unwrap();
                }
                TypeDefKind::Enum(e) => {
                    writeln!(out, "| case | |\n| --- | --- |").unwrap();
                    for c in &e.cases {
                        writeln!(out, "| `{}` | {} |", c.name, docs(&c.docs).replace('\n', " ")).unwrap();
                    }
                    writeln!(out).unwrap();
                }
                _ => {}
            }
        }
        for (fname, f) in &i.functions {
            let params: Vec<String> =
                f.params.iter().map(|p| format!("{}: {}", p.name, ty(&r, &p.ty))).collect();
            let result = f.result.as_ref().map(|t| format!(" -> {}", ty(&r, t))).unwrap_or_default();
            writeln!(
                out,
                "### func `{fname}`\n\n```wit\n{fname}: func({}){result}\n```\n\n{}\n",
                params.join(", "),
                docs(&f.docs)
            )
            .unwrap();
        }
    }
    writeln!(out, "## Worlds\n").unwrap();
    for (wname, wid) in &package.worlds {
        let w = &r.worlds[*wid];
        let items = |m: &wit_parser::IndexMap<wit_parser::WorldKey, WorldItem>| -> String {
            m.keys().map(|k| format!("`{}`", r.name_world_key(k))).collect::<Vec<_>>().join(", ")
        };
        writeln!(
            out,
            "### world `{wname}`\n\n{}\n\n- imports: {}\n- exports: {}\n",
            docs(&w.docs),
            items(&w.imports),
            items(&w.exports)
        )
        .unwrap();
    }
    out.trim_end().to_string() + "\n"
}

#[test]
fn the_wit_reference_is_generated_from_wit_and_current() {
    let generated = reference(&root().join("wit"));
    let path = root().join("docs/wit-reference.md");
    if std::env::var("UPDATE_WIT_REFERENCE").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/wit-reference.md is out of date: run UPDATE_WIT_REFERENCE=1 cargo test -p e2e --test all -- contract"
    );
    // Everything documented made it in.
    for needle in
        ["### func `evaluate`", "### record `capacity`", "| `quota-exceeded` |", "### world `backend-plugin`"]
    {
        assert!(generated.contains(needle), "{needle} missing");
    }
}
