//! The bundled demo shop: a tiny origin compiled into the binary, so
//! `tagproxy demo` shows the whole path with no files and no network.
//!
//! Pages: home (product list), a product page, the cart, the checkout and an
//! SPA route that changes pages with `history.pushState`. Each calls the
//! `window.zaraz` API the way a Zaraz site does.

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::proxy::body::{self, ProxyBody};

const STYLE: &str = include_str!("shop.css");
const SPA_SCRIPT: &str = include_str!("spa.js");

struct Product {
    id: &'static str,
    sku: &'static str,
    name: &'static str,
    price: f64,
    blurb: &'static str,
}

const PRODUCTS: [Product; 3] = [
    Product {
        id: "mug",
        sku: "TP-MUG-01",
        name: "Edge Mug",
        price: 14.5,
        blurb: "Holds 350 ml of coffee and zero third-party scripts.",
    },
    Product {
        id: "tee",
        sku: "TP-TEE-02",
        name: "First-Party T-Shirt",
        price: 24.0,
        blurb: "Organic cotton, printed with a very small JavaScript file.",
    },
    Product {
        id: "sticker",
        sku: "TP-STK-03",
        name: "Sticker Pack",
        price: 4.0,
        blurb: "Five stickers for the laptop of someone who reads HAR files.",
    },
];

fn page(title: &str, main: &str, script: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Tagproxy Demo Shop</title>
<style>{STYLE}</style>
</head>
<body>
<header><a class="brand" href="/">Tagproxy Demo Shop</a>
<nav><a href="/">Products</a> <a href="/cart">Cart</a> <a href="/checkout">Checkout</a> <a href="/app">SPA</a></nav></header>
<main>
{main}
</main>
<footer>Served by the demo origin inside the tagproxy binary. Open <a href="/_tagproxy/s.js">the client script</a>.</footer>
<script>{script}</script>
</body>
</html>
"#
    )
}

fn product_json(p: &Product, quantity: u32) -> String {
    format!(
        r#"{{product_id: "{}", sku: "{}", name: "{}", price: {}, quantity: {quantity}, currency: "USD"}}"#,
        p.id, p.sku, p.name, p.price
    )
}

fn home() -> String {
    let mut cards = String::new();
    for p in &PRODUCTS {
        cards.push_str(&format!(
            r#"<li class="card"><h2><a href="/product/{id}">{name}</a></h2><p>{blurb}</p><p class="price">${price:.2}</p></li>"#,
            id = p.id,
            name = p.name,
            blurb = p.blurb,
            price = p.price
        ));
    }
    let list: Vec<String> = PRODUCTS.iter().map(|p| product_json(p, 1)).collect();
    page(
        "Products",
        &format!("<h1>Products</h1><ul class=\"grid\">{cards}</ul>"),
        &format!(
            "window.zaraz && zaraz.ecommerce('Product List Viewed', {{list_id: 'home', products: [{}]}});",
            list.join(", ")
        ),
    )
}

fn product(p: &Product) -> String {
    page(
        p.name,
        &format!(
            r#"<h1>{name}</h1><p>{blurb}</p><p class="price">${price:.2}</p>
<button id="add" class="buy">Add to cart</button> <a href="/cart">Go to cart</a>"#,
            name = p.name,
            blurb = p.blurb,
            price = p.price
        ),
        &format!(
            "var item = {item};
window.zaraz && zaraz.ecommerce('Product Viewed', item);
document.getElementById('add').addEventListener('click', function () {{
  zaraz.ecommerce('Product Added', item);
  this.textContent = 'Added ✓';
}});",
            item = product_json(p, 1)
        ),
    )
}

fn cart() -> String {
    let (a, b) = (&PRODUCTS[0], &PRODUCTS[2]);
    page(
        "Cart",
        &format!(
            r#"<h1>Cart</h1><table><tr><td>{} × 1</td><td>${:.2}</td></tr><tr><td>{} × 2</td><td>${:.2}</td></tr></table>
<a class="button" href="/checkout">Checkout</a>"#,
            a.name,
            a.price,
            b.name,
            b.price * 2.0
        ),
        &format!(
            "window.zaraz && zaraz.ecommerce('Cart Viewed', {{cart_id: 'demo-cart', products: [{}, {}]}});",
            product_json(a, 1),
            product_json(b, 2)
        ),
    )
}

fn checkout() -> String {
    let (a, b) = (&PRODUCTS[0], &PRODUCTS[2]);
    let total = a.price + b.price * 2.0;
    page(
        "Checkout",
        &format!(
            r#"<h1>Checkout</h1>
<form id="checkout"><label>Email <input type="email" name="email" required value="visitor@example.com"></label>
<button type="submit">Place order (${total:.2})</button></form><p id="done" hidden>Thank you! Order <b>DEMO-1001</b> is placed.</p>"#
        ),
        &format!(
            "var products = [{a}, {b}];
window.zaraz && zaraz.ecommerce('Checkout Started', {{checkout_id: 'demo-checkout', value: {total}, currency: 'USD', products: products}});
document.getElementById('checkout').addEventListener('submit', function (e) {{
  e.preventDefault();
  zaraz.set('email', this.email.value, {{scope: 'page'}});
  zaraz.ecommerce('Order Completed', {{order_id: 'DEMO-1001', total: {total}, revenue: {total}, currency: 'USD', products: products}});
  document.getElementById('done').hidden = false;
}});",
            a = product_json(a, 1),
            b = product_json(b, 2)
        ),
    )
}

fn spa() -> String {
    page(
        "SPA",
        r#"<h1>Single-page app</h1>
<p>These links change the URL with <code>history.pushState</code>; with <code>spa = true</code> each one is a virtual pageview.</p>
<nav class="spa"><a href="/app/overview" data-spa>Overview</a> <a href="/app/settings" data-spa>Settings</a> <a href="/app/help" data-spa>Help</a></nav>
<section id="view"><h2>Overview</h2></section>
<button id="signup">Sign up (zaraz.track)</button>"#,
        SPA_SCRIPT,
    )
}

fn html(status: StatusCode, body: String) -> Response<ProxyBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body::full(body))
        .expect("static response")
}

/// One response of the demo origin.
pub fn respond(method: &Method, path: &str) -> Response<ProxyBody> {
    if method != Method::GET && method != Method::HEAD {
        return html(
            StatusCode::METHOD_NOT_ALLOWED,
            page("Not allowed", "<h1>405</h1>", ""),
        );
    }
    match path {
        "/" | "/index.html" => html(StatusCode::OK, home()),
        "/cart" => html(StatusCode::OK, cart()),
        "/checkout" => html(StatusCode::OK, checkout()),
        p if p == "/app" || p.starts_with("/app/") => html(StatusCode::OK, spa()),
        p => match p
            .strip_prefix("/product/")
            .and_then(|id| PRODUCTS.iter().find(|x| x.id == id))
        {
            Some(product_) => html(StatusCode::OK, product(product_)),
            None => html(
                StatusCode::NOT_FOUND,
                page(
                    "Not found",
                    "<h1>Not found</h1><p><a href=\"/\">Back to the shop</a></p>",
                    "",
                ),
            ),
        },
    }
}

/// Starts the demo origin on an ephemeral loopback port.
pub async fn start_origin() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = service_fn(|req: Request<Incoming>| async move {
                Ok::<_, Infallible>(respond(req.method(), req.uri().path()))
            });
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            tokio::spawn(conn);
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_has_a_head_and_calls_zaraz() {
        for path in [
            "/",
            "/product/mug",
            "/cart",
            "/checkout",
            "/app",
            "/app/help",
        ] {
            let html = match path {
                "/" => home(),
                "/cart" => cart(),
                "/checkout" => checkout(),
                p if p.starts_with("/app") => spa(),
                _ => product(&PRODUCTS[0]),
            };
            assert!(html.contains("<head>"), "{path}");
            assert!(html.contains("zaraz."), "{path}");
        }
        assert_eq!(respond(&Method::GET, "/product/nope").status(), 404);
        assert_eq!(respond(&Method::GET, "/product/tee").status(), 200);
    }
}
