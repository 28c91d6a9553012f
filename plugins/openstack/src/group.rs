//! One group's servers: reconcile with what Nova lists (clean up ERROR and stuck builds, finish
//! an interrupted resize), report capacity, and move towards a target — create, delete, resize.
//! Every action starts from a fresh list, so a retry, an agent crash or a restart never creates
//! a duplicate or forgets a server.

use crate::config::GroupParams;
use crate::errors::ApiError;
use crate::nova::{self, Server, GROUP_KEY};
use crate::plan;
use crate::session::{random_suffix, Session};
use elastic_sdk::http::{sleep, Request};
use elastic_sdk::{host, log, Capacity, PluginError, Target};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// How often a long operation (resize, delete) is polled.
const POLL: Duration = Duration::from_millis(500);

/// What the plugin remembers between calls (lost on reload; Nova stays the truth).
#[derive(Default)]
pub struct Memory {
    /// Servers seen building: id → creation time, to log how long they took.
    building: BTreeMap<String, i64>,
    /// Deletes issued: id → when, to issue them again when a server lingers.
    deleting: BTreeMap<String, i64>,
    /// What happened outside a `scale` call (cleanups), told in the next outcome.
    notes: Vec<String>,
    /// Flavor name → ID.
    flavors: BTreeMap<String, String>,
    /// Image name → ID.
    images: BTreeMap<String, String>,
}

pub struct Group<'a> {
    pub name: &'a str,
    pub params: GroupParams,
    pub ladder: Vec<String>,
}

impl Group<'_> {
    fn prefix(&self) -> String {
        self.params.name_prefix.clone().unwrap_or_else(|| self.name.to_string())
    }

    fn state_key(&self) -> String {
        format!("tier:{}", self.name)
    }

    fn failures_key(&self) -> String {
        format!("build-failures:{}", self.name)
    }

    fn build_failures(&self) -> plan::BuildFailures {
        elastic_sdk::state::get(&self.failures_key()).unwrap_or_default()
    }

    /// The tier new servers get: the last target's, else the configured flavor's.
    fn current_tier(&self) -> u32 {
        elastic_sdk::state::get::<u32>(&self.state_key())
            .filter(|t| (*t as usize) < self.ladder.len())
            .unwrap_or_else(|| self.params.initial_tier())
    }
}

fn api(e: ApiError) -> PluginError {
    e.into_plugin_error()
}

/// The group's servers that count, after cleaning up what must go.
pub fn reconcile(s: &mut Session, m: &mut Memory, g: &Group) -> Result<Vec<Server>, PluginError> {
    let servers = list(s, m, g)?;
    let now = host::now_ms();
    let mut members = Vec::new();
    // Read once per pass, not per server: state lives in the agent's database.
    let failures = g.build_failures();
    let notes_before = m.notes.len();
    m.deleting.retain(|id, _| servers.iter().any(|s| &s.id == id));
    for server in servers {
        if server.leaving() {
            continue;
        }
        if let Some(&issued) = m.deleting.get(&server.id) {
            // Deleted but still listed without a task: Nova lost the request. Ask again.
            if now - issued > g.params.delete_timeout.as_millis() as i64 {
                log::warn(&format!(
                    "{} ({}) still exists after its delete; deleting again",
                    server.name, server.id
                ));
                nova::delete(s, &server.id).map_err(api)?;
                m.deleting.insert(server.id.clone(), now);
            }
            continue;
        }
        match server.status.as_str() {
            "ERROR" => {
                let fault = server.fault.clone().unwrap_or_else(|| "no fault message".into());
                let why = format!("went to ERROR: {fault}");
                cleanup(s, m, g, &server, &why, now)?;
                continue;
            }
            "BUILD" if now - server.created_ms > g.params.build_timeout.as_millis() as i64 => {
                let why =
                    format!("still building after {}", elastic_sdk::duration::format(g.params.build_timeout));
                cleanup(s, m, g, &server, &why, now)?;
                continue;
            }
            "BUILD" => {
                m.building.insert(server.id.clone(), server.created_ms);
            }
            "VERIFY_RESIZE" => {
                // A resize whose confirmation was interrupted (agent restart, failed call).
                let Some(to) =
                    plan::tier_of(&server, &g.ladder).and_then(|t| g.ladder.get(t as usize)).cloned()
                else {
                    members.push(server);
                    continue;
                };
                log::info(&format!(
                    "{} is waiting in VERIFY_RESIZE on {to}: finishing the resize",
                    server.name
                ));
                let note = match finish_resize(s, m, g, &server, "its previous flavor", &to, now) {
                    Ok(done) => done,
                    Err(e) => format!("{e:?}"),
                };
                m.notes.push(note);
            }
            _ => {}
        }
        if server.ready() {
            if let Some(created) = m.building.remove(&server.id) {
                log::info(&format!(
                    "{} ({}) ACTIVE {:.1} s after it was created",
                    server.name,
                    server.id,
                    (now - created) as f64 / 1000.0
                ));
            }
        }
        members.push(server);
    }
    // A server that built after the last failure ends the run of failures (unless this pass
    // found new ones).
    if failures.count > 0 && m.notes.len() == notes_before {
        if let Some(built) = members.iter().find(|x| x.ready() && x.created_ms > failures.last_ms) {
            log::info(&format!("{} built fine: creating at full speed again", built.name));
            elastic_sdk::state::delete(&g.failures_key());
        }
    }
    Ok(members)
}

/// Deletes a server that will never serve, and tells why in the log and the next outcome.
/// Counts it as a build failure: creates back off (see [`plan::BuildFailures`]).
fn cleanup(
    s: &mut Session,
    m: &mut Memory,
    g: &Group,
    server: &Server,
    why: &str,
    now: i64,
) -> Result<(), PluginError> {
    let note = format!("{} ({}) {why}; deleted it", server.name, server.id);
    log::warn(&note);
    nova::delete(s, &server.id).map_err(api)?;
    m.deleting.insert(server.id.clone(), now);
    m.building.remove(&server.id);
    let mut failures = g.build_failures();
    failures.count += 1;
    failures.last_ms = now;
    failures.last = note.clone();
    elastic_sdk::state::set(&g.failures_key(), &failures)?;
    m.notes.push(note);
    Ok(())
}

/// The group's servers, with flavors named.
fn list(s: &mut Session, m: &mut Memory, g: &Group) -> Result<Vec<Server>, PluginError> {
    let mut servers = nova::list_group(s, g.name, &g.prefix()).map_err(api)?;
    for server in &mut servers {
        name_flavor(s, m, server)?;
    }
    Ok(servers)
}

/// One server, with its flavor named.
fn get(s: &mut Session, m: &mut Memory, id: &str) -> Result<Option<Server>, PluginError> {
    let mut server = nova::get(s, id).map_err(api)?;
    if let Some(server) = &mut server {
        name_flavor(s, m, server)?;
    }
    Ok(server)
}

/// Before 2.47 Nova gives only the flavor's ID: look its name up.
fn name_flavor(s: &mut Session, m: &mut Memory, server: &mut Server) -> Result<(), PluginError> {
    if s.microversion()? >= (2, 47) {
        return Ok(());
    }
    if !m.flavors.values().any(|id| *id == server.flavor) {
        load_flavors(s, m)?;
    }
    if let Some((name, _)) = m.flavors.iter().find(|(_, id)| **id == server.flavor) {
        server.flavor = name.clone();
    }
    Ok(())
}

pub fn describe(s: &mut Session, m: &mut Memory, g: &Group) -> Result<Capacity, PluginError> {
    let members = reconcile(s, m, g)?;
    Ok(plan::capacity(&members, &g.ladder, g.current_tier()))
}

/// Moves the group towards `target`, returning what was done and the capacity after.
pub fn scale(
    s: &mut Session,
    m: &mut Memory,
    g: &Group,
    target: Target,
) -> Result<(Capacity, String), PluginError> {
    let members = reconcile(s, m, g)?;
    let Some(flavor) = g.ladder.get(target.tier as usize).cloned() else {
        return Err(PluginError::BadConfig(format!(
            "target tier {} but the group's flavors ladder has {} entries: lower the group's max_tier",
            target.tier,
            g.ladder.len()
        )));
    };
    elastic_sdk::state::set(&g.state_key(), &target.tier)?;
    let mut done: Vec<String> = std::mem::take(&mut m.notes);
    let result = act(s, m, g, &members, target, &flavor, &mut done);
    let detail = if done.is_empty() { "nothing to do".to_string() } else { done.join("; ") };
    match result {
        Err(e) if done.is_empty() => Err(e),
        Err(e) => Err(elastic_sdk::prefixed(e, &format!("after: {detail}; then "))),
        Ok(()) => {
            let after = list(s, m, g)?;
            let members: Vec<Server> = after.into_iter().filter(|x| !x.leaving()).collect();
            Ok((plan::capacity(&members, &g.ladder, target.tier), detail))
        }
    }
}

/// The `count` servers to delete: those not ACTIVE first (they serve nothing), then the ACTIVE
/// ones as the agent ranks them by what it measured (`[group.scale_in]`), the deletion policy's
/// order breaking ties; never one that reports busy (fewer are deleted, and those kept named).
fn choose_victims(
    g: &Group,
    members: &[Server],
    count: usize,
) -> Result<(Vec<Server>, Vec<String>), PluginError> {
    let order = plan::victims(members, members.len(), g.params.deletion_policy);
    let (inactive, active): (Vec<Server>, Vec<Server>) =
        order.into_iter().partition(|x| x.status != "ACTIVE");
    let mut chosen: Vec<Server> = inactive.into_iter().take(count).collect();
    if chosen.len() == count || active.is_empty() {
        return Ok((chosen, vec![]));
    }
    let names: Vec<String> = active.iter().map(|x| x.name.clone()).collect();
    let ranked = elastic_sdk::scale_in::rank(g.name, &names)?;
    let (picked, kept) = elastic_sdk::choose_victims(&ranked, count - chosen.len());
    chosen.extend(picked.iter().filter_map(|n| active.iter().find(|x| &x.name == n).cloned()));
    Ok((chosen, kept))
}

fn act(
    s: &mut Session,
    m: &mut Memory,
    g: &Group,
    members: &[Server],
    target: Target,
    flavor: &str,
    done: &mut Vec<String>,
) -> Result<(), PluginError> {
    let have = members.len() as u32;
    let mut victims = Vec::new();
    if target.replicas > have {
        let failures = g.build_failures();
        if let Some(wait) = failures.wait_ms(host::now_ms()) {
            let why = format!(
                "holding creation for {:.0} s more: {} server(s) in a row failed to build (last: {})",
                wait as f64 / 1000.0,
                failures.count,
                failures.last
            );
            // Nova's quota recheck at build time fails a create with an ERROR server, not a 403.
            return Err(if failures.last.contains("Quota exceeded") {
                PluginError::QuotaExceeded(why)
            } else {
                PluginError::Unavailable(why)
            });
        }
        let flavor_id = flavor_id(s, m, flavor)?;
        let image_id = image_id(s, m, &g.params.image)?;
        for _ in have..target.replicas {
            let name = format!("{}-{}", g.prefix(), random_suffix());
            let (body, hints) = server_body(s, g, &name, &image_id, &flavor_id)?;
            match nova::create(s, body, hints) {
                Ok(id) => {
                    m.building.insert(id.clone(), host::now_ms());
                    done.push(format!("created {name} ({flavor})"));
                }
                Err(e) if e.status == 0 => {
                    // The request may or may not have reached Nova: the next list tells.
                    return Err(PluginError::Unavailable(format!(
                        "{}: {}; whether {name} was created is unknown until the next evaluation lists the group",
                        e.call, e.message
                    )));
                }
                Err(e) => return Err(api(e)),
            }
        }
    } else if target.replicas < have {
        let kept;
        (victims, kept) = choose_victims(g, members, (have - target.replicas) as usize)?;
        if !kept.is_empty() {
            done.push(format!("kept {} busy: {}", kept.len(), kept.join(", ")));
        }
    }
    if !victims.is_empty() {
        for v in &victims {
            nova::delete(s, &v.id).map_err(api)?;
            m.deleting.insert(v.id.clone(), host::now_ms());
        }
        let started = host::now_ms();
        let deadline = started + g.params.delete_timeout.as_millis() as i64;
        let names: Vec<&str> = victims.iter().map(|v| v.name.as_str()).collect();
        loop {
            let left = nova::list_group(s, g.name, &g.prefix()).map_err(api)?;
            if !left.iter().any(|x| victims.iter().any(|v| v.id == x.id)) {
                done.push(format!(
                    "deleted {} (gone after {:.1} s)",
                    names.join(", "),
                    (host::now_ms() - started) as f64 / 1000.0
                ));
                break;
            }
            if host::now_ms() > deadline {
                done.push(format!(
                    "deleted {} (still listed after {}; checked again each evaluation)",
                    names.join(", "),
                    elastic_sdk::duration::format(g.params.delete_timeout)
                ));
                break;
            }
            sleep(POLL);
        }
    }
    // Vertical: one server at a time, so the group never loses more than one server's capacity.
    let to_resize: Vec<&Server> = members
        .iter()
        .filter(|x| !victims.iter().any(|v| v.id == x.id))
        .filter(|x| x.status == "ACTIVE" && plan::tier_of(x, &g.ladder) != Some(target.tier))
        .collect();
    for server in to_resize {
        done.push(resize(s, m, g, server, flavor)?);
    }
    Ok(())
}

/// Resize `server` to `to`: request, wait for VERIFY_RESIZE, verify, confirm (or revert).
fn resize(
    s: &mut Session,
    m: &mut Memory,
    g: &Group,
    server: &Server,
    to: &str,
) -> Result<String, PluginError> {
    let from = server.flavor.clone();
    let started = host::now_ms();
    let to_id = flavor_id(s, m, to)?;
    match nova::action(s, &server.id, "resize", json!({ "flavorRef": to_id })) {
        Ok(()) => {}
        // Nova: "When resizing, instances must change flavor!" — it is already there.
        Err(e) if e.status == 400 && e.message.contains("must change flavor") => {
            return Ok(format!("{} already on {to}", server.name));
        }
        Err(e) => {
            return Err(elastic_sdk::prefixed(api(e), &format!("resize {} {from} → {to}: ", server.name)))
        }
    }
    let deadline = started + g.params.resize_timeout.as_millis() as i64;
    loop {
        sleep(POLL);
        let Some(now) = get(s, m, &server.id)? else {
            return Err(PluginError::Other(format!("{} disappeared during its resize", server.name)));
        };
        match (now.status.as_str(), now.task_state.as_deref()) {
            ("VERIFY_RESIZE", _) => return finish_resize(s, m, g, &now, &from, to, started),
            ("ERROR", _) => {
                return Err(PluginError::Other(format!(
                    "resize {} {from} → {to}: server went to ERROR: {}",
                    server.name,
                    now.fault.unwrap_or_else(|| "no fault message".into())
                )))
            }
            ("ACTIVE", None) if now.flavor == to => {
                return Ok(format!("resized {} {from} → {to} (confirmed by the cloud)", server.name))
            }
            ("ACTIVE", None) => {
                // Back to ACTIVE on the old flavor with no fault: Nova could not do it, and only
                // the instance action says why.
                let why = nova::last_action(s, &server.id, "resize")
                    .map_err(api)?
                    .unwrap_or_else(|| "no instance action recorded".into());
                return Err(PluginError::Other(format!(
                    "resize {} {from} → {to} failed: Nova's resize action: {why}; the server is ACTIVE on {from}",
                    server.name
                )));
            }
            _ if host::now_ms() > deadline => {
                return Err(PluginError::Unavailable(format!(
                    "resize {} {from} → {to} still {} ({}) after {}",
                    server.name,
                    now.status,
                    now.task_state.unwrap_or_default(),
                    elastic_sdk::duration::format(g.params.resize_timeout)
                )))
            }
            _ => {}
        }
    }
}

/// A server in VERIFY_RESIZE on `to`: health-check it, then confirm, or revert when unhealthy.
fn finish_resize(
    s: &mut Session,
    m: &mut Memory,
    g: &Group,
    server: &Server,
    from: &str,
    to: &str,
    started: i64,
) -> Result<String, PluginError> {
    if let Some(v) = &g.params.verify {
        if let Err(why) = verify(v, server) {
            log::warn(&format!(
                "{} failed its health check on {to}: {why}; reverting the resize",
                server.name
            ));
            nova::action(s, &server.id, "revertResize", Value::Null).map_err(api)?;
            wait_settled(s, m, g, server, started)?;
            return Err(PluginError::Other(format!(
                "resize {} {from} → {to} reverted: health check failed: {why}",
                server.name
            )));
        }
    }
    nova::action(s, &server.id, "confirmResize", Value::Null).map_err(api)?;
    let now = wait_settled(s, m, g, server, started)?;
    if now.flavor != to {
        return Err(PluginError::Other(format!(
            "{} is on {} after confirming a resize to {to}",
            server.name, now.flavor
        )));
    }
    Ok(format!(
        "resized {} {from} → {to} (ACTIVE {:.1} s after the request)",
        server.name,
        (host::now_ms() - started) as f64 / 1000.0
    ))
}

/// Polls until the server is ACTIVE with no task.
fn wait_settled(
    s: &mut Session,
    m: &mut Memory,
    g: &Group,
    server: &Server,
    started: i64,
) -> Result<Server, PluginError> {
    let deadline = started + g.params.resize_timeout.as_millis() as i64;
    loop {
        match get(s, m, &server.id)? {
            Some(x) if x.ready() => return Ok(x),
            Some(x) if x.status == "ERROR" => {
                return Err(PluginError::Other(format!(
                    "{} went to ERROR: {}",
                    server.name,
                    x.fault.unwrap_or_default()
                )))
            }
            None => return Err(PluginError::Other(format!("{} disappeared", server.name))),
            Some(x) if host::now_ms() > deadline => {
                return Err(PluginError::Unavailable(format!(
                    "{} still {} after the resize deadline",
                    server.name, x.status
                )))
            }
            _ => sleep(POLL),
        }
    }
}

/// GET the verify URL until it answers as expected or its timeout passes.
fn verify(v: &crate::config::Verify, server: &Server) -> Result<(), String> {
    if v.url.contains("{address}") && server.address.is_none() {
        return Err(format!("{} has no IP address for {{address}} in {}", server.name, v.url));
    }
    let url = v
        .url
        .replace("{name}", &server.name)
        .replace("{id}", &server.id)
        .replace("{address}", server.address.as_deref().unwrap_or_default());
    let deadline = host::now_ms() + v.timeout.as_millis() as i64;
    loop {
        let why = match Request::get(&url).timeout(Duration::from_secs(5)).send() {
            Ok(r) if v.expect_status.map_or((200..300).contains(&r.status), |e| e == r.status) => {
                return Ok(())
            }
            Ok(r) => format!("GET {url}: HTTP {}", r.status),
            Err(e) => format!("GET {url}: {e}"),
        };
        if host::now_ms() > deadline {
            return Err(why);
        }
        sleep(Duration::from_secs(1));
    }
}

fn server_body(
    s: &mut Session,
    g: &Group,
    name: &str,
    image: &str,
    flavor: &str,
) -> Result<(Value, Option<Value>), PluginError> {
    use crate::config::Networks;
    let p = &g.params;
    let mv = s.microversion()?;
    let mut metadata: BTreeMap<String, String> = p.metadata.clone();
    metadata.insert(GROUP_KEY.into(), g.name.into());
    // Which agent created it: the machine's name (contract 0.1.1 `about`).
    metadata.insert("elastic-agent".into(), elastic_sdk::about::hostname());
    // Which decision created it (contract 0.1.2): traceable to the journal entry, and for a
    // cluster group to the leader's fencing revision.
    if let Some(id) = elastic_sdk::decision::id() {
        metadata.insert("elastic-decision".into(), id);
    }
    let mut body = json!({ "name": name, "imageRef": image, "flavorRef": flavor, "metadata": metadata });
    if mv >= (2, 52) {
        body["tags"] = json!([nova::group_tag(g.name)]);
    }
    match &p.networks {
        Networks::Ids(ids) => body["networks"] = ids.iter().map(|id| json!({ "uuid": id })).collect(),
        Networks::Named(n) if mv >= (2, 37) => body["networks"] = json!(n),
        Networks::Default if mv >= (2, 37) => body["networks"] = json!("none"),
        _ => {}
    }
    if let Some(k) = &p.key_name {
        body["key_name"] = json!(k);
    }
    if !p.security_groups.is_empty() {
        body["security_groups"] = p.security_groups.iter().map(|n| json!({ "name": n })).collect();
    }
    if let Some(u) = &p.user_data {
        body["user_data"] = json!(nova::base64(u.as_bytes()));
    }
    if let Some(az) = &p.availability_zone {
        body["availability_zone"] = json!(az);
    }
    let hints = p.server_group.as_ref().map(|sg| json!({ "group": sg }));
    Ok((body, hints))
}

fn load_flavors(s: &mut Session, m: &mut Memory) -> Result<(), PluginError> {
    for f in nova::flavors(s).map_err(api)? {
        m.flavors.insert(f.name, f.id);
    }
    Ok(())
}

fn flavor_id(s: &mut Session, m: &mut Memory, name: &str) -> Result<String, PluginError> {
    if !m.flavors.contains_key(name) {
        load_flavors(s, m)?;
    }
    m.flavors.get(name).cloned().ok_or_else(|| {
        PluginError::BadConfig(format!(
            "flavor `{name}` does not exist in this cloud (or is not visible to the project)"
        ))
    })
}

fn image_id(s: &mut Session, m: &mut Memory, name: &str) -> Result<String, PluginError> {
    if let Some(id) = m.images.get(name) {
        return Ok(id.clone());
    }
    let id = nova::image_id(s, name)
        .map_err(api)?
        .ok_or_else(|| PluginError::BadConfig(format!("image `{name}` does not exist in this cloud")))?;
    m.images.insert(name.into(), id.clone());
    Ok(id)
}
