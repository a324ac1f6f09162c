//! MetaBase.xml read into the SMTP service's nodes by path: the service (`/LM/SmtpSvc`), its virtual
//! servers (`/LM/SmtpSvc/N`) with the service's properties inherited, their domains
//! (`/LM/SmtpSvc/N/Domain/<name>`), and the other SMTP nodes (virtual directories, routing sources),
//! kept so that nothing is dropped unseen.
//!
//! The file's form (iis-metabase.md §4): `<configuration><MBProperty>` holds one element per node,
//! named after its KeyType, with the node's path in `Location` and one attribute per property;
//! properties the schema does not know are `<Custom Name= ID= Value= …/>` children. The text is UTF-8
//! (with or without a BOM) or UTF-16 (with a BOM), as IIS and the tools that edit it write it.

use std::fmt;

/// One property as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prop {
    /// The property name (a `<Custom>` known by its ID gets its schema name).
    pub name: String,
    /// The value as written (attribute-value normalisation applied: MULTISZ lines become blanks).
    pub value: String,
    /// The line of the attribute (or of the `<Custom>` element).
    pub line: usize,
    /// Written as a `<Custom>` child: its ID (0 when the element gives none).
    pub custom: Option<u32>,
    /// Marked SECURE (the value is encrypted with the machine's key).
    pub secure: bool,
    /// Inherited from `/LM/SmtpSvc` rather than set on this node.
    pub inherited: bool,
}

/// One element of `<MBProperty>` under `/LM/SmtpSvc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The element name (IIS's KeyType: `IIsSmtpServer`, …).
    pub key_type: String,
    /// The `Location` as written.
    pub location: String,
    /// The element's line.
    pub line: usize,
    /// The properties in file order (attributes first, then `<Custom>` children).
    pub props: Vec<Prop>,
}

impl Node {
    /// The property `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&Prop> {
        self.props
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }
}

/// A remote, local or alias domain of a virtual server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// The name from the path, as written.
    pub name: String,
    /// Its element.
    pub node: Node,
}

/// One virtual server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The N of `/LM/SmtpSvc/N`.
    pub instance: u32,
    /// Its element, with the effective properties: its own, then those inherited from the service
    /// (marked [`Prop::inherited`]).
    pub node: Node,
    /// Its domains, in file order.
    pub domains: Vec<Domain>,
}

/// The SMTP service of one MetaBase.xml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metabase {
    /// `/LM/SmtpSvc` (IIsSmtpService), when the file has it.
    pub service: Option<Node>,
    /// The virtual servers by instance number.
    pub servers: Vec<Server>,
    /// Every other element under `/LM/SmtpSvc`.
    pub others: Vec<Node>,
    /// How many elements lie outside `/LM/SmtpSvc` (W3SVC, the schema, …): not SMTP settings.
    pub outside: usize,
}

/// Why a file is not a MetaBase.xml this reader can take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetabaseError {
    /// Neither UTF-8 nor UTF-16 text.
    Encoding(String),
    /// Not well-formed XML.
    Xml {
        /// 1-based line.
        line: u32,
        /// 1-based column.
        column: u32,
        /// The parser's message.
        message: String,
    },
    /// XML, but not an IIS metabase.
    NotMetabase(String),
    /// A metabase without any SMTP virtual server.
    NoSmtp,
    /// An element that breaks the form.
    Element {
        /// Its name.
        element: String,
        /// Its line.
        line: usize,
        /// What is wrong.
        what: String,
    },
}

impl fmt::Display for MetabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetabaseError::Encoding(m) => write!(f, "not UTF-8 or UTF-16 text: {m}"),
            MetabaseError::Xml {
                line,
                column,
                message,
            } => write!(f, "{line}:{column}: not well-formed XML: {message}"),
            MetabaseError::NotMetabase(m) => write!(f, "not an IIS metabase: {m}"),
            MetabaseError::NoSmtp => write!(
                f,
                "no SMTP virtual server: the metabase has no <IIsSmtpServer Location=\"/LM/SmtpSvc/N\"> element"
            ),
            MetabaseError::Element {
                element,
                line,
                what,
            } => write!(f, "{line}: <{element}>: {what}"),
        }
    }
}

impl std::error::Error for MetabaseError {}

/// The text of a MetaBase.xml file: UTF-8 (a BOM is dropped), or UTF-16 with its BOM, or UTF-16
/// without one when the first character tells (`<` with a zero byte).
pub fn decode_text(bytes: &[u8]) -> Result<String, MetabaseError> {
    let utf16 = |b: &[u8], le: bool| -> Result<String, MetabaseError> {
        if !b.len().is_multiple_of(2) {
            return Err(MetabaseError::Encoding(
                "UTF-16 with an odd number of bytes".into(),
            ));
        }
        let units: Vec<u16> = b
            .chunks(2)
            .map(|p| {
                if le {
                    u16::from_le_bytes([p[0], p[1]])
                } else {
                    u16::from_be_bytes([p[0], p[1]])
                }
            })
            .collect();
        String::from_utf16(&units).map_err(|e| MetabaseError::Encoding(format!("UTF-16: {e}")))
    };
    match bytes {
        [0xef, 0xbb, 0xbf, rest @ ..] => utf8(rest),
        [0xff, 0xfe, rest @ ..] => utf16(rest, true),
        [0xfe, 0xff, rest @ ..] => utf16(rest, false),
        [b'<', 0, ..] => utf16(bytes, true),
        [0, b'<', ..] => utf16(bytes, false),
        _ => utf8(bytes),
    }
}

fn utf8(b: &[u8]) -> Result<String, MetabaseError> {
    String::from_utf8(b.to_vec()).map_err(|e| MetabaseError::Encoding(format!("UTF-8: {e}")))
}

/// Schema IDs of the properties the importer converts, for `<Custom Name="UnknownName_<ID>">`
/// (a property written by a tool that did not know its name). iis-smtp.md §1.2.
const KNOWN_IDS: &[(u32, &str)] = &[
    (1013, "ConnectionTimeout"),
    (1014, "MaxConnections"),
    (1023, "ServerBindings"),
    (2021, "SecureBindings"),
    (4003, "LogFilePeriod"),
    (6000, "AuthFlags"),
    (6019, "IPSecurity"),
    (36871, "MaxBatchedMessages"),
    (36880, "PickupDirectory"),
    (36886, "HopCount"),
    (36887, "MaxSmtpErrors"),
    (36891, "MaxMessageSize"),
    (36892, "MaxSessionSize"),
    (36894, "MaxOutConnections"),
    (36895, "MaxRecipients"),
    (36905, "SmartHostType"),
    (36906, "SmartHost"),
    (36909, "BadMailDirectory"),
    (36912, "MasqueradeDomain"),
    (36921, "RemoteTimeout"),
    (36925, "MaxOutConnectionsPerDomain"),
    (36946, "RouteAction"),
    (36947, "RouteActionString"),
    (36970, "RelayIpList"),
    (36973, "RelayForAuth"),
    (36996, "SmtpRemoteProgressiveRetry"),
    (37019, "SmtpRemoteDelayExpireMinutes"),
    (37020, "SmtpRemoteNDRExpireMinutes"),
];

/// Where a node lies under `/LM/SmtpSvc`.
#[derive(Debug, PartialEq, Eq)]
enum Place<'a> {
    Service,
    Server(u32),
    Domain(u32, &'a str),
    Other,
    Outside,
}

/// Classifies a Location (IIS writes `SmtpSvc` in any case, sometimes with a trailing `/`).
fn place(location: &str) -> Place<'_> {
    let loc = location.trim().trim_end_matches('/');
    let Some(rest) = strip_prefix_ci(loc, "/LM/SmtpSvc") else {
        return Place::Outside;
    };
    if rest.is_empty() {
        return Place::Service;
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Place::Outside; // `/LM/SmtpSvcX`
    };
    let (seg, tail) = rest.split_once('/').unwrap_or((rest, ""));
    // IIS writes instance numbers plainly: `/LM/SmtpSvc/01` is not instance 1.
    let Some(n) = seg
        .parse::<u32>()
        .ok()
        .filter(|n| *n >= 1 && n.to_string() == seg)
    else {
        return Place::Other;
    };
    if tail.is_empty() {
        return Place::Server(n);
    }
    match strip_prefix_ci(tail, "Domain/") {
        Some(name) if !name.is_empty() && !name.contains('/') => Place::Domain(n, name),
        _ => Place::Other,
    }
}

/// The virtual server a Location lies in (`/LM/SmtpSvc/N/…`), if any.
pub fn instance_of(location: &str) -> Option<u32> {
    match place(location) {
        Place::Server(n) | Place::Domain(n, _) => Some(n),
        Place::Other => {
            let rest = strip_prefix_ci(location.trim(), "/LM/SmtpSvc/")?;
            let seg = rest.split('/').next()?;
            seg.parse::<u32>().ok().filter(|n| n.to_string() == seg)
        }
        Place::Service | Place::Outside => None,
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

impl Metabase {
    /// Reads a MetaBase.xml file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Metabase, MetabaseError> {
        Metabase::parse(&decode_text(bytes)?)
    }

    /// Reads MetaBase.xml text.
    pub fn parse(text: &str) -> Result<Metabase, MetabaseError> {
        let opts = roxmltree::ParsingOptions {
            allow_dtd: false,
            ..roxmltree::ParsingOptions::default()
        };
        let doc = roxmltree::Document::parse_with_options(text, opts).map_err(|e| {
            let p = e.pos();
            MetabaseError::Xml {
                line: p.row,
                column: p.col,
                message: e.to_string(),
            }
        })?;
        let line = |pos: usize| doc.text_pos_at(pos).row as usize;
        let root = doc.root_element();
        if root.tag_name().name() != "configuration" {
            return Err(MetabaseError::NotMetabase(format!(
                "the root element is <{}>, not <configuration>",
                root.tag_name().name()
            )));
        }
        let mb = root
            .children()
            .find(|n| n.is_element() && n.tag_name().name() == "MBProperty")
            .ok_or_else(|| {
                MetabaseError::NotMetabase("<configuration> has no <MBProperty> element".into())
            })?;
        let mut service: Option<Node> = None;
        let mut servers: Vec<Server> = Vec::new();
        let mut domains: Vec<(u32, Domain)> = Vec::new();
        let mut others: Vec<Node> = Vec::new();
        let mut outside = 0;
        let mut seen: Vec<(String, usize)> = Vec::new();
        for el in mb.children().filter(|n| n.is_element()) {
            let element = el.tag_name().name().to_string();
            let el_line = line(el.range().start);
            let err = |what: String| MetabaseError::Element {
                element: element.clone(),
                line: el_line,
                what,
            };
            let Some(location) = el.attribute("Location") else {
                return Err(err("no Location attribute".into()));
            };
            let where_ = place(location);
            if where_ == Place::Outside {
                outside += 1;
                continue;
            }
            let key = location.trim().trim_end_matches('/').to_ascii_lowercase();
            if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
                return Err(err(format!(
                    "Location=\"{location}\" appears twice (first on line {first})"
                )));
            }
            seen.push((key, el_line));
            let mut props: Vec<Prop> = Vec::new();
            for a in el.attributes().filter(|a| a.name() != "Location") {
                props.push(Prop {
                    name: a.name().to_string(),
                    value: a.value().to_string(),
                    line: line(a.range().start),
                    custom: None,
                    secure: false,
                    inherited: false,
                });
            }
            for c in el.children().filter(|n| n.is_element()) {
                let c_line = line(c.range().start);
                let c_err = |what: String| MetabaseError::Element {
                    element: format!("Custom> in <{element} Location=\"{location}\""),
                    line: c_line,
                    what,
                };
                if c.tag_name().name() != "Custom" {
                    return Err(c_err(format!(
                        "unexpected child <{}> (only <Custom> properties belong here)",
                        c.tag_name().name()
                    )));
                }
                let name = c
                    .attribute("Name")
                    .ok_or_else(|| c_err("no Name attribute".into()))?;
                let value = c
                    .attribute("Value")
                    .ok_or_else(|| c_err(format!("{name}: no Value attribute")))?;
                let id = match c.attribute("ID") {
                    Some(v) => Some(
                        v.trim()
                            .parse::<u32>()
                            .map_err(|_| c_err(format!("{name}: ID=\"{v}\" is not a number")))?,
                    ),
                    None => None,
                };
                // A tool that did not know the property writes UnknownName_<ID>.
                let known = id
                    .filter(|_| name.starts_with("UnknownName_"))
                    .and_then(|id| KNOWN_IDS.iter().find(|(k, _)| *k == id))
                    .map(|(_, n)| n.to_string());
                let secure = c
                    .attribute("Attributes")
                    .is_some_and(|a| a.to_ascii_uppercase().contains("SECURE"));
                props.push(Prop {
                    name: known.unwrap_or_else(|| name.to_string()),
                    value: value.to_string(),
                    line: c_line,
                    custom: id.or(Some(0)),
                    secure,
                    inherited: false,
                });
            }
            for (i, p) in props.iter().enumerate() {
                if let Some(prev) = props[..i]
                    .iter()
                    .find(|q| q.name.eq_ignore_ascii_case(&p.name))
                {
                    return Err(MetabaseError::Element {
                        element: format!("{element} Location=\"{location}\""),
                        line: p.line,
                        what: format!("{} is set twice (first on line {})", p.name, prev.line),
                    });
                }
            }
            let node = Node {
                key_type: element.clone(),
                location: location.to_string(),
                line: el_line,
                props,
            };
            match where_ {
                Place::Service if element == "IIsSmtpService" => service = Some(node),
                Place::Server(n) if element == "IIsSmtpServer" => servers.push(Server {
                    instance: n,
                    node,
                    domains: Vec::new(),
                }),
                Place::Domain(n, name) if element == "IIsSmtpDomain" => domains.push((
                    n,
                    Domain {
                        name: name.to_string(),
                        node,
                    },
                )),
                _ => others.push(node),
            }
        }
        if servers.is_empty() {
            return Err(MetabaseError::NoSmtp);
        }
        servers.sort_by_key(|s| s.instance);
        for (n, d) in domains {
            match servers.iter_mut().find(|s| s.instance == n) {
                Some(s) => s.domains.push(d),
                None => others.push(d.node),
            }
        }
        // Inheritance: a property the server does not set comes from the service.
        if let Some(svc) = &service {
            for s in &mut servers {
                for p in &svc.props {
                    if s.node.get(&p.name).is_none() {
                        s.node.props.push(Prop {
                            inherited: true,
                            ..p.clone()
                        });
                    }
                }
            }
        }
        Ok(Metabase {
            service,
            servers,
            others,
            outside,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"<?xml version ="1.0"?>
<configuration xmlns="urn:microsoft-catalog:XML_Metabase_V64_0">
<MBProperty>
<IIS_Global	Location ="."
		SessionKey="496344627000000024000000"
	>
</IIS_Global>
<IIsSmtpService	Location ="/LM/SmtpSvc"
		MaxMessageSize="4194304"
		RelayForAuth="4294967295"
	>
</IIsSmtpService>
<IIsSmtpServer	Location ="/LM/SMTPSVC/1"
		AuthFlags="AuthBasic | AuthAnonymous"
		MaxMessageSize="1048576"
		ServerBindings="10.0.0.5:25:
			:2525:"
	>
	<Custom
		Name="UnknownName_36970"
		ID="36970"
		Value=""
		Type="BINARY"
		UserType="IIS_MD_UT_FILE"
		Attributes="INHERIT"
	/>
</IIsSmtpServer>
<IIsSmtpVirtualDir	Location ="/LM/SmtpSvc/1/Root"
		Path="C:\Inetpub\mailroot"
	>
</IIsSmtpVirtualDir>
<IIsSmtpDomain	Location ="/LM/SmtpSvc/1/Domain/Partner.Example"
		RouteAction="4098"
	>
</IIsSmtpDomain>
</MBProperty>
</configuration>
"#;

    #[test]
    fn nodes_by_path_with_inheritance_and_custom() {
        let m = Metabase::parse(SAMPLE).unwrap();
        assert_eq!(m.outside, 1);
        let s = &m.servers[0];
        assert_eq!(s.instance, 1);
        let own = s.node.get("MaxMessageSize").unwrap();
        assert_eq!((own.value.as_str(), own.inherited), ("1048576", false));
        let inh = s.node.get("relayforauth").unwrap();
        assert_eq!((inh.value.as_str(), inh.inherited), ("4294967295", true));
        assert_eq!(s.node.get("AuthFlags").unwrap().line, 14);
        let relay = s.node.get("RelayIpList").unwrap();
        assert_eq!(
            (relay.value.as_str(), relay.custom, relay.line),
            ("", Some(36970), 19)
        );
        let b = &s.node.get("ServerBindings").unwrap().value;
        assert_eq!(
            b.split_whitespace().collect::<Vec<_>>(),
            ["10.0.0.5:25:", ":2525:"]
        );
        assert_eq!(s.domains.len(), 1);
        assert_eq!(s.domains[0].name, "Partner.Example");
        assert_eq!(m.others.len(), 1);
        assert_eq!(m.others[0].key_type, "IIsSmtpVirtualDir");
    }

    #[test]
    fn encodings() {
        let mut le = vec![0xff, 0xfe];
        le.extend(SAMPLE.encode_utf16().flat_map(|u| u.to_le_bytes()));
        let mut be = vec![0xfe, 0xff];
        be.extend(SAMPLE.encode_utf16().flat_map(|u| u.to_be_bytes()));
        let mut bom8 = vec![0xef, 0xbb, 0xbf];
        bom8.extend(SAMPLE.as_bytes());
        let want = Metabase::parse(SAMPLE).unwrap();
        for bytes in [le, be, bom8] {
            assert_eq!(Metabase::from_bytes(&bytes).unwrap(), want);
        }
        assert!(matches!(
            Metabase::from_bytes(&[0xff, 0xfe, 0x3c]),
            Err(MetabaseError::Encoding(_))
        ));
        assert!(matches!(
            Metabase::from_bytes(b"<a>\xff</a>"),
            Err(MetabaseError::Encoding(_))
        ));
    }

    #[test]
    fn bad_input() {
        let e = Metabase::parse("just text").unwrap_err();
        assert!(matches!(e, MetabaseError::Xml { line: 1, .. }), "{e}");
        let e = Metabase::parse("<configuration>\n<MBProperty>\n<a></b>").unwrap_err();
        assert!(e.to_string().starts_with("3:"), "{e}");
        let e = Metabase::parse("<html/>").unwrap_err();
        assert_eq!(
            e.to_string(),
            "not an IIS metabase: the root element is <html>, not <configuration>"
        );
        let e = Metabase::parse("<configuration/>").unwrap_err();
        assert!(matches!(e, MetabaseError::NotMetabase(_)));
        let e = Metabase::parse("<configuration><MBProperty><IIsSmtpService Location=\"/LM/SmtpSvc\"/></MBProperty></configuration>").unwrap_err();
        assert_eq!(e, MetabaseError::NoSmtp);
        let e = Metabase::parse(
            "<configuration><MBProperty>\n<IIsSmtpServer HopCount=\"3\"/></MBProperty></configuration>",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "2: <IIsSmtpServer>: no Location attribute");
        let e = Metabase::parse(
            "<configuration><MBProperty>\n<IIsSmtpServer Location=\"/LM/SmtpSvc/1\">\n<Custom ID=\"1\" Value=\"2\"/></IIsSmtpServer></MBProperty></configuration>",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("3: <Custom> in <IIsSmtpServer Location=\"/LM/SmtpSvc/1\">: no Name"),
            "{e}"
        );
        let e = Metabase::parse(
            "<configuration><MBProperty>\n<IIsSmtpServer Location=\"/LM/SmtpSvc/1\"/>\n<IIsSmtpServer Location=\"/lm/smtpsvc/1/\"/></MBProperty></configuration>",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("appears twice (first on line 2)"),
            "{e}"
        );
    }

    #[test]
    fn places() {
        assert_eq!(place("/LM/SmtpSvc"), Place::Service);
        assert_eq!(place("/lm/SMTPSVC/2/"), Place::Server(2));
        assert_eq!(
            place("/LM/SmtpSvc/1/Domain/a.example"),
            Place::Domain(1, "a.example")
        );
        assert_eq!(place("/LM/SmtpSvc/1/Domain"), Place::Other);
        assert_eq!(place("/LM/SmtpSvc/1/Root"), Place::Other);
        assert_eq!(place("/LM/SmtpSvc/01"), Place::Other);
        assert_eq!(place("/LM/W3SVC/1"), Place::Outside);
        assert_eq!(place("/LM/SmtpSvcX"), Place::Outside);
    }
}
