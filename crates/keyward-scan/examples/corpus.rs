//! Generates the labelled evaluation corpus: realistic files in a dozen languages and
//! configuration formats, each positive file with one planted secret at a known line,
//! each negative file with one decoy (near-miss Keyward keys, rule counter-examples,
//! hashes, UUIDs, commit ids, integrity strings, placeholders, documentation examples).
//!
//! `cargo run -p keyward-scan --example corpus -- OUT_DIR [POSITIVES] [NEGATIVES] [SEED]`
//!
//! Writes the files and `OUT_DIR/labels.json`: `{"files": [{"path", "positive", "line",
//! "end_line", "kind"}]}` (`line`..=`end_line` is where the secret lies; `kind` is
//! `keyward`, `rule:<id>`, `generic`, or for negatives `near-miss`, `counter:<id>`,
//! `decoy:<what>`). Labels hold no secret values.

use std::fmt::Write as _;
use std::path::Path;

use keyward_core::key::{KeyPrefix, mint};
use keyward_scan::rules::RULES;
use keyward_scan::template::{Rng, random, render};
use serde_json::json;

struct Lang {
    ext: &'static str,
    filler: &'static [&'static str],
    assign: fn(&str, &str) -> String,
}

const LANGS: &[Lang] = &[
    Lang {
        ext: "py",
        filler: &[
            "import os",
            "import logging",
            "from dataclasses import dataclass",
            "",
            "logger = logging.getLogger(__name__)",
            "def handler(event, context):",
            "    items = [x for x in event.get(\"items\", []) if x]",
            "    return {\"status\": 200, \"count\": len(items)}",
            "@dataclass",
            "class Settings:",
            "    timeout: int = 30",
            "    retries: int = 3",
            "# Configuration for the billing worker",
            "RETRY_DELAY_SECONDS = 5",
        ],
        assign: |n, v| format!("{n} = \"{v}\""),
    },
    Lang {
        ext: "js",
        filler: &[
            "const express = require('express');",
            "const app = express();",
            "app.use(express.json());",
            "",
            "function total(items) {",
            "  return items.reduce((a, b) => a + b.price, 0);",
            "}",
            "app.get('/health', (req, res) => res.send('ok'));",
            "module.exports = { total };",
            "// retry the upstream call twice",
            "const PORT = process.env.PORT || 3000;",
        ],
        assign: |n, v| format!("const {n} = '{v}';"),
    },
    Lang {
        ext: "ts",
        filler: &[
            "import { Injectable } from '@angular/core';",
            "export interface Order {",
            "  id: string;",
            "  total: number;",
            "}",
            "",
            "export class OrderService {",
            "  private cache = new Map<string, Order>();",
            "  get(id: string): Order | undefined { return this.cache.get(id); }",
            "}",
        ],
        assign: |n, v| format!("export const {n}: string = \"{v}\";"),
    },
    Lang {
        ext: "go",
        filler: &[
            "package main",
            "",
            "import (",
            "\t\"fmt\"",
            "\t\"net/http\"",
            ")",
            "func main() {",
            "\thttp.HandleFunc(\"/\", handler)",
            "\tfmt.Println(\"listening\")",
            "}",
            "func handler(w http.ResponseWriter, r *http.Request) {",
            "\tw.WriteHeader(http.StatusOK)",
            "}",
        ],
        assign: |n, v| format!("var {n} = \"{v}\""),
    },
    Lang {
        ext: "rs",
        filler: &[
            "use std::collections::HashMap;",
            "",
            "#[derive(Debug, Clone)]",
            "pub struct Config {",
            "    pub port: u16,",
            "}",
            "fn main() {",
            "    let mut seen = HashMap::new();",
            "    seen.insert(\"a\", 1);",
            "    println!(\"{seen:?}\");",
            "}",
        ],
        assign: |n, v| format!("const {}: &str = \"{v}\";", n.to_uppercase()),
    },
    Lang {
        ext: "java",
        filler: &[
            "package com.acme.billing;",
            "",
            "import java.util.List;",
            "public class InvoiceService {",
            "    private final int retries = 3;",
            "    public int count(List<String> items) {",
            "        return items.size();",
            "    }",
            "}",
        ],
        assign: |n, v| format!("    private static final String {n} = \"{v}\";"),
    },
    Lang {
        ext: "rb",
        filler: &[
            "require 'json'",
            "",
            "module Billing",
            "  class Invoice",
            "    attr_reader :total",
            "    def initialize(total)",
            "      @total = total",
            "    end",
            "  end",
            "end",
        ],
        assign: |n, v| format!("{n} = '{v}'"),
    },
    Lang {
        ext: "php",
        filler: &[
            "<?php",
            "namespace App\\Http;",
            "",
            "class Controller {",
            "    public function index() {",
            "        return view('home');",
            "    }",
            "}",
        ],
        assign: |n, v| format!("${n} = '{v}';"),
    },
    Lang {
        ext: "cs",
        filler: &[
            "using System;",
            "namespace Acme.Api {",
            "    public class Startup {",
            "        public int Port { get; set; } = 8080;",
            "    }",
            "}",
        ],
        assign: |n, v| format!("        public const string {n} = \"{v}\";"),
    },
    Lang {
        ext: "sh",
        filler: &[
            "#!/usr/bin/env bash",
            "set -euo pipefail",
            "cd \"$(dirname \"$0\")\"",
            "echo \"deploying $SERVICE\"",
            "docker compose up -d",
            "for f in *.sql; do psql -f \"$f\"; done",
        ],
        assign: |n, v| format!("export {n}=\"{v}\""),
    },
    Lang {
        ext: "yaml",
        filler: &[
            "apiVersion: apps/v1",
            "kind: Deployment",
            "metadata:",
            "  name: billing",
            "spec:",
            "  replicas: 2",
            "  template:",
            "    spec:",
            "      containers:",
            "        - name: app",
            "          image: acme/billing:1.4.2",
        ],
        assign: |n, v| format!("  {n}: \"{v}\""),
    },
    Lang {
        ext: "json",
        filler: &[
            "{",
            "  \"name\": \"billing\",",
            "  \"version\": \"1.4.2\",",
            "  \"private\": true,",
            "  \"port\": 8080,",
        ],
        assign: |n, v| format!("  \"{n}\": \"{v}\","),
    },
    Lang {
        ext: "toml",
        filler: &[
            "[server]",
            "port = 8080",
            "workers = 4",
            "",
            "[database]",
            "pool_size = 10",
            "[logging]",
            "level = \"info\"",
        ],
        assign: |n, v| format!("{n} = \"{v}\""),
    },
    Lang {
        ext: "env",
        filler: &[
            "PORT=8080",
            "LOG_LEVEL=info",
            "NODE_ENV=production",
            "WORKERS=4",
            "",
        ],
        assign: |n, v| format!("{}={v}", n.to_uppercase()),
    },
    Lang {
        ext: "xml",
        filler: &[
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>",
            "<configuration>",
            "  <appSettings>",
            "    <add key=\"Port\" value=\"8080\" />",
            "  </appSettings>",
            "</configuration>",
        ],
        assign: |n, v| format!("    <add key=\"{n}\" value=\"{v}\" />"),
    },
    Lang {
        ext: "properties",
        filler: &[
            "server.port=8080",
            "spring.application.name=billing",
            "logging.level.root=INFO",
            "management.endpoints.web.exposure.include=health",
        ],
        assign: |n, v| format!("{n}={v}"),
    },
    Lang {
        ext: "tf",
        filler: &[
            "terraform {",
            "  required_version = \">= 1.5\"",
            "}",
            "resource \"aws_s3_bucket\" \"logs\" {",
            "  bucket = \"acme-logs\"",
            "}",
            "variable \"region\" {",
            "  default = \"eu-west-1\"",
            "}",
        ],
        assign: |n, v| format!("  {n} = \"{v}\""),
    },
    Lang {
        ext: "kt",
        filler: &[
            "package com.acme.app",
            "",
            "import kotlinx.coroutines.launch",
            "data class Order(val id: String, val total: Long)",
            "fun total(orders: List<Order>) = orders.sumOf { it.total }",
        ],
        assign: |n, v| format!("val {n} = \"{v}\""),
    },
    Lang {
        ext: "swift",
        filler: &[
            "import Foundation",
            "",
            "struct Order: Codable {",
            "    let id: String",
            "    let total: Int",
            "}",
            "func fetch() async throws -> [Order] { [] }",
        ],
        assign: |n, v| format!("let {n} = \"{v}\""),
    },
    Lang {
        ext: "yml",
        filler: &[
            "version: \"3.9\"",
            "services:",
            "  app:",
            "    image: acme/app:2.1",
            "    ports:",
            "      - \"8080:8080\"",
            "    environment:",
            "      - LOG_LEVEL=info",
        ],
        assign: |n, v| format!("      - {}={v}", n.to_uppercase()),
    },
    Lang {
        ext: "ini",
        filler: &[
            "[app]",
            "port = 8080",
            "workers = 4",
            "",
            "[log]",
            "level = info",
        ],
        assign: |n, v| format!("{n} = {v}"),
    },
];

const SECRET_NAMES: &[&str] = &[
    "api_key",
    "apiKey",
    "client_secret",
    "auth_token",
    "secret_key",
    "access_token",
    "private_token",
    "signing_key",
    "API_SECRET",
    "service_token",
];
const PASSWORD_NAMES: &[&str] = &["password", "db_password", "DB_PASS", "smtp_password"];
const KEYWARD_NAMES: &[&str] = &[
    "KEYWARD_TOKEN",
    "keyward_api_key",
    "token",
    "apiKey",
    "auth",
];

fn file_text(rng: &mut Rng, lang: &Lang, planted: &[String]) -> (String, usize) {
    let n = 6 + rng.below(25);
    let at = rng.below(n + 1);
    let mut out = String::new();
    let mut line = 1;
    let mut planted_line = 0;
    for i in 0..=n {
        if i == at {
            planted_line = line;
            for p in planted {
                let _ = writeln!(out, "{p}");
                line += 1;
            }
        }
        if i < n {
            let _ = writeln!(out, "{}", rng.pick(lang.filler));
            line += 1;
        }
    }
    (out, planted_line)
}

/// Splits `NAME=value` / `NAME: value` examples into (name, value); `None` for the rest.
fn split_assignment(example: &str) -> Option<(String, String)> {
    if example.contains('\n') {
        return None;
    }
    let i = example.find(['=', ':'])?;
    if example[i..].starts_with("://") {
        return None;
    }
    let name = example[..i].trim();
    let value = example[i + 1..].trim().trim_matches('"');
    let ok_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    (ok_name && !value.is_empty() && !value.contains(' ') && !value.contains('\''))
        .then(|| (name.replace('.', "_"), value.to_owned()))
}

fn password(rng: &mut Rng) -> String {
    loop {
        let len = 12 + rng.below(6);
        let set: Vec<char> = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789#%&*+!"
            .chars()
            .collect();
        let p: String = (0..len).map(|_| *rng.pick(&set)).collect();
        let classes = [
            p.chars().any(|c| c.is_ascii_lowercase()),
            p.chars().any(|c| c.is_ascii_uppercase()),
            p.chars().any(|c| c.is_ascii_digit()),
            p.chars().any(|c| !c.is_ascii_alphanumeric()),
        ];
        if classes.iter().all(|&c| c) {
            return p;
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = Path::new(args.get(1).map_or("corpus", String::as_str)).to_path_buf();
    let positives: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(600);
    let negatives: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(600);
    let seed: u64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(8);
    let mut rng = Rng::new(seed);
    std::fs::create_dir_all(&out).expect("create the corpus folder");
    let mut labels = Vec::new();
    let prefixes = ["kw", "kw_live", "kw_test", "acme", "acme_prod", "svc9"];

    for i in 0..positives {
        let lang = rng.pick(LANGS);
        let roll = rng.below(100);
        let (planted, kind, lang, span) = if roll < 25 {
            let prefix = KeyPrefix::parse(rng.pick::<&str>(&prefixes)).unwrap();
            let key = mint(&prefix).plaintext.to_string();
            let line = if rng.below(5) == 0 {
                format!("# curl -H \"Authorization: Bearer {key}\" https://api.internal/v1/orders")
            } else {
                (lang.assign)(rng.pick::<&str>(KEYWARD_NAMES), &key)
            };
            (vec![line], "keyward".to_owned(), lang, 1)
        } else if roll < 70 {
            let rule = rng.pick(RULES);
            let example = render(rule.example, &mut rng);
            match split_assignment(&example) {
                Some((n, v)) => (
                    vec![(lang.assign)(&n, &v)],
                    format!("rule:{}", rule.id),
                    lang,
                    1,
                ),
                None => {
                    let lines: Vec<String> = example.lines().map(str::to_owned).collect();
                    let span = lines.len();
                    (lines, format!("rule:{}", rule.id), &LANGS[9], span) // sh
                }
            }
        } else if roll < 88 {
            let (name, value) = if rng.below(3) == 0 {
                (*rng.pick(PASSWORD_NAMES), password(&mut rng))
            } else if rng.below(4) == 0 {
                (*rng.pick(SECRET_NAMES), random(&mut rng, 'h', 32))
            } else {
                let len = 24 + rng.below(17);
                let mut v = random(&mut rng, 'a', len);
                v.replace_range(3..4, &random(&mut rng, 'd', 1));
                (*rng.pick(SECRET_NAMES), v)
            };
            (
                vec![(lang.assign)(name, &value)],
                "generic".to_owned(),
                lang,
                1,
            )
        } else {
            // Shapes written by hand, not from the rule templates.
            let pw = password(&mut rng);
            let tok = random(&mut rng, 'a', 32);
            let hex = random(&mut rng, 'h', 40);
            let db = random(&mut rng, 'a', 16);
            let options = [
                (
                    "go",
                    format!("\tcfg := Config{{Host: \"db\", Password: \"{pw}\"}}"),
                ),
                ("yaml", format!("  password: {pw}")),
                ("json", format!("  \"apiKey\": \"{tok}\",")),
                ("kt", format!("val apiToken = \"{tok}\"")),
                (
                    "yml",
                    format!("      - DATABASE_URL=postgres://app:{db}@db:5432/app"),
                ),
                ("swift", format!("let clientSecret = \"{tok}\"")),
                (
                    "py",
                    format!("requests.get(url, headers={{\"X-Api-Key\": \"{tok}\"}})"),
                ),
                ("ini", format!("secret_key = {hex}")),
                (
                    "sh",
                    format!("curl -u admin:{pw} https://ci.internal/api/json"),
                ),
                (
                    "cs",
                    format!("        var credential = new NetworkCredential(\"svc\", \"{pw}\");"),
                ),
            ];
            let (ext, line) = rng.pick(&options).clone();
            let lang = LANGS.iter().find(|l| l.ext == ext).unwrap_or(&LANGS[9]);
            (vec![line], format!("hand:{ext}"), lang, 1)
        };
        let (text, line) = file_text(&mut rng, lang, &planted);
        let path = format!("pos/{i:04}.{}", lang.ext);
        write(&out, &path, &text);
        labels.push(json!({"path": path, "positive": true, "line": line,
            "end_line": line + span - 1, "kind": kind}));
    }

    for i in 0..negatives {
        let lang = rng.pick(LANGS);
        let roll = rng.below(100);
        let (decoy, kind): (Vec<String>, String) = if roll < 20 {
            // A near miss: the key format, a checksum that fails.
            let prefix = KeyPrefix::parse(rng.pick::<&str>(&prefixes)).unwrap();
            let mut key = mint(&prefix).plaintext.to_string();
            let at = key.len() - 1 - rng.below(38);
            let c = key.as_bytes()[at];
            let r = if c == b'Q' { "R" } else { "Q" };
            key.replace_range(at..at + 1, r);
            (
                vec![(lang.assign)(rng.pick::<&str>(KEYWARD_NAMES), &key)],
                "near-miss".into(),
            )
        } else if roll < 40 {
            // Only counter-examples without a long random part: a random string of the
            // wrong length under a secret-like name is still a secret (the generic
            // detector reports it, rightly), so it cannot be labelled negative.
            let quiet: Vec<_> = RULES
                .iter()
                .filter(|r| !has_long_random(r.counter))
                .collect();
            let rule = *rng.pick(&quiet);
            let counter = render(rule.counter, &mut rng);
            let lines = match split_assignment(&counter) {
                Some((n, v)) => vec![(lang.assign)(&n, &v)],
                None => counter.lines().map(str::to_owned).collect(),
            };
            (lines, format!("counter:{}", rule.id))
        } else if roll < 65 {
            let which = rng.below(8);
            let (n, v, what) = match which {
                0 => ("sha256", random(&mut rng, 'h', 64), "sha256"),
                1 => ("checksum", random(&mut rng, 'h', 40), "sha1"),
                2 => ("commit", random(&mut rng, 'h', 40), "commit-id"),
                3 => ("request_id", uuid(&mut rng), "uuid"),
                4 => (
                    "integrity",
                    format!("sha512-{}==", random(&mut rng, 'b', 86)),
                    "integrity",
                ),
                5 => ("etag", random(&mut rng, 'h', 32), "etag"),
                6 => ("token_sha256", random(&mut rng, 'h', 64), "hashed-token"),
                _ => (
                    "image_digest",
                    format!("sha256:{}", random(&mut rng, 'h', 64)),
                    "image-digest",
                ),
            };
            (vec![(lang.assign)(n, &v)], format!("decoy:{what}"))
        } else if roll < 80 {
            let options: &[(&str, &str)] = &[
                ("api_key", "YOUR_API_KEY"),
                ("token", "${GITHUB_TOKEN}"),
                ("password", "changeme"),
                ("client_secret", "xxxxxxxxxxxxxxxxxxxxxxxx"),
                ("api_key", "<your-api-key>"),
                ("aws_access_key_id", "AKIAIOSFODNN7EXAMPLE"),
                (
                    "aws_secret_access_key",
                    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                ),
                ("secret", "{{ .Values.secret }}"),
                ("auth_token", "REPLACE_ME"),
                ("stripe_key", "sk_test_XXXXXXXXXXXXXXXXXXXXXXXX"),
                ("password", "********"),
                ("api_token", "insert-token-here"),
            ];
            let (n, v) = rng.pick(options);
            (vec![(lang.assign)(n, v)], "decoy:placeholder".into())
        } else {
            let code: &[&str] = &[
                "password = getpass.getpass(\"Password: \")",
                "token = request.headers[\"Authorization\"]",
                "api_key = settings.API_KEY",
                "secret = base64.b64encode(os.urandom(32))",
                "String password = System.getenv(\"DB_PASSWORD\");",
                "key_length = 2048",
                "\"tokenizer\": \"bert-base-uncased\",",
                "secret_name = \"prod/db/password\"",
                "password_min_length = 12",
                "auth_url = \"https://login.internal/oauth2/token\"",
                "api_key = \"\"",
                "token = None",
                "csrf_token = \"{{ csrf_token() }}\"",
                "const token = await getAccessToken(scopes);",
                "if token_type == \"bearer\":",
                "password_hash = bcrypt.hashpw(password, bcrypt.gensalt())",
            ];
            if rng.below(2) == 0 {
                let line = (*rng.pick(code)).to_owned();
                let (text, at) = file_text(&mut rng, lang, std::slice::from_ref(&line));
                let path = format!("neg/{i:04}.{}", lang.ext);
                write(&out, &path, &text);
                labels.push(json!({"path": path, "positive": false, "line": at,
                    "end_line": at, "kind": "decoy:code"}));
                continue;
            }
            let options = [
                ("integrity", format!("sha384-{}", random(&mut rng, 'b', 64))),
                ("nonce", random(&mut rng, 'a', 24)),
                ("client_id", random(&mut rng, 'a', 20)),
                ("cache_key", random(&mut rng, 'a', 32)),
                ("build_id", random(&mut rng, 'l', 20)),
                ("css_hash", random(&mut rng, 'h', 8)),
                ("public_key", random(&mut rng, 'b', 44)),
                ("max_tokens", "4096".to_owned()),
            ];
            let (n, v) = rng.pick(&options).clone();
            (vec![(lang.assign)(n, &v)], "decoy:benign".into())
        };
        let (text, line) = file_text(&mut rng, lang, &decoy);
        let path = format!("neg/{i:04}.{}", lang.ext);
        write(&out, &path, &text);
        labels.push(json!({"path": path, "positive": false, "line": line,
            "end_line": line + decoy.len() - 1, "kind": kind}));
    }
    let labels = json!({"seed": seed, "files": labels});
    std::fs::write(
        out.join("labels.json"),
        serde_json::to_string_pretty(&labels).unwrap(),
    )
    .expect("write labels.json");
    eprintln!(
        "wrote {positives} positive and {negatives} negative files to {}",
        out.display()
    );
}

/// Whether a template has a random placeholder of 6 characters or more (`{a:20}`).
fn has_long_random(template: &str) -> bool {
    template.split('{').skip(1).any(|p| {
        p.split_once('}')
            .and_then(|(inner, _)| inner.split_once(':'))
            .and_then(|(c, n)| (c != "x").then(|| n.parse::<usize>().ok()).flatten())
            .is_some_and(|n| n >= 6)
    })
}

fn uuid(rng: &mut Rng) -> String {
    format!(
        "{}-{}-4{}-a{}-{}",
        random(rng, 'h', 8),
        random(rng, 'h', 4),
        random(rng, 'h', 3),
        random(rng, 'h', 3),
        random(rng, 'h', 12)
    )
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).expect("create folder");
    std::fs::write(p, text).expect("write file");
}
