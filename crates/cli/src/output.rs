//! Printing results: human-readable text by default, JSON with `--json`.

use lichen_core::ComponentInfo;
use lichen_core::deployment::model::DeploymentRecord;

pub fn json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
}

pub fn format_time_ms(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    lichen_core::logs::format_timestamp(time)
}

pub fn component_table(components: &[ComponentInfo]) {
    if components.is_empty() {
        println!("No components are deployed.");
        return;
    }
    let width = components
        .iter()
        .map(|c| c.component_name.len())
        .max()
        .unwrap_or(0)
        .max("COMPONENT".len());
    println!(
        "{:<width$}  {:<10}  {:<9}  NOTE",
        "COMPONENT", "VERSION", "STATE"
    );
    for c in components {
        let note = if c.builtin {
            "built in".to_string()
        } else {
            c.status_reason.clone().unwrap_or_default()
        };
        println!(
            "{:<width$}  {:<10}  {:<9}  {}",
            c.component_name, c.version, c.state, note
        );
    }
}

pub fn component_details(c: &ComponentInfo) {
    println!("Component:     {}", c.component_name);
    println!("Version:       {}", c.version);
    println!("State:         {}", c.state);
    if let Some(r) = &c.status_reason {
        println!("Reason:        {r}");
    }
    if let Some(pid) = c.pid {
        println!("Main PID:      {pid}");
    }
    println!(
        "Root:          {}",
        if c.root { "yes" } else { "no (dependency)" }
    );
    if c.builtin {
        println!("Built in:      yes (served by the core)");
    }
    if let Some(l) = &c.resource_limits {
        println!("Limits:        {l}");
    }
    for m in &c.metrics {
        println!(
            "Metric:        {} = {} {} (at {})",
            m.name,
            m.value,
            m.unit,
            format_time_ms(m.timestamp)
        );
    }
    let config = serde_json::to_string_pretty(&c.configuration).unwrap_or_default();
    println!("Configuration:");
    for line in config.lines() {
        println!("  {line}");
    }
}

pub fn deployment_line(d: &DeploymentRecord) {
    let detail = d
        .detailed_status
        .map(|s| format!(" ({s:?})"))
        .unwrap_or_default();
    println!(
        "{}  {:<11}{}  created {}",
        d.deployment_id,
        format!("{:?}", d.status).to_uppercase(),
        detail,
        format_time_ms(d.created_on)
    );
}

pub fn deployment_details(d: &DeploymentRecord) {
    println!("Deployment:    {}", d.deployment_id);
    println!(
        "Status:        {}",
        format!("{:?}", d.status).to_uppercase()
    );
    if let Some(s) = d.detailed_status {
        println!("Detail:        {s:?}");
    }
    println!("Created:       {}", format_time_ms(d.created_on));
    if let Some(p) = &d.progress {
        println!("Progress:      {p}");
    }
    if let Some(c) = &d.failure_cause {
        println!("Failure cause: {c}");
    }
    if !d.error_types.is_empty() {
        println!("Error types:   {}", d.error_types.join(", "));
    }
    for note in &d.status_details {
        println!("Note:          {note}");
    }
    for (name, version) in &d.request.root_components_to_add {
        println!("Add:           {name} {version}");
    }
    for name in &d.request.root_components_to_remove {
        println!("Remove:        {name}");
    }
}

pub fn core_status(s: &lichen_core::control::CoreStatus) {
    println!("Root:          {}", s.root.display());
    println!("Thing:         {}", s.thing_name);
    println!("PID:           {}", s.pid);
    println!("Version:       {}", s.version);
    println!("Components:    {}", s.components);
    match &s.cloud {
        None => println!("Cloud:         not configured"),
        Some(c) => {
            println!(
                "Cloud:         {} ({} as {}{})",
                c.state,
                c.endpoint,
                c.thing_name,
                if c.provisioned {
                    ", provisioned by claim"
                } else {
                    ""
                }
            );
            if let Some(e) = &c.last_error {
                println!("Cloud error:   {e}");
            }
            println!(
                "Cloud subs:    {} (messages dropped at full subscribers: {})",
                c.subscriptions, c.messages_dropped
            );
            match &c.spool {
                None => println!("Cloud spool:   none (QoS 1 publishes fail while disconnected)"),
                Some(sp) => println!(
                    "Cloud spool:   {} messages, {} of {} ({}), {} dropped ({} refused full){}",
                    sp.depth,
                    human_bytes(sp.bytes),
                    human_bytes(sp.max_bytes),
                    sp.storage,
                    sp.dropped,
                    sp.rejected,
                    sp.oldest_unsent_secs
                        .map(|s| format!(", oldest unsent {s} s"))
                        .unwrap_or_default()
                ),
            }
        }
    }
    match &s.disk {
        None => println!("Disk:          unknown"),
        Some(d) => {
            println!(
                "Disk:          {} free of {}{}",
                human_bytes(d.free_bytes),
                human_bytes(d.total_bytes),
                if d.reserve_held {
                    ""
                } else {
                    " (space reserve released)"
                }
            );
            if let Some(w) = &d.warning {
                println!("Warning:       {w}");
            }
        }
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {} ({n} B)", UNITS[unit])
    }
}
