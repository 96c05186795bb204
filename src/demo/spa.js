var views = {
  overview: "<h2>Overview</h2><p>Everything at a glance.</p>",
  settings: "<h2>Settings</h2><p>Nothing to configure: it is a demo.</p>",
  help: "<h2>Help</h2><p>Each link here is a history change, not a page load.</p>"
};
function show(path) {
  var name = path.split("/")[2] || "overview";
  document.getElementById("view").innerHTML = views[name] || views.overview;
  document.title = name.charAt(0).toUpperCase() + name.slice(1) + " · Tagproxy Demo Shop";
}
document.querySelectorAll("a[data-spa]").forEach(function (a) {
  a.addEventListener("click", function (e) {
    e.preventDefault();
    history.pushState({}, "", a.getAttribute("href"));
    show(location.pathname);
  });
});
window.addEventListener("popstate", function () { show(location.pathname); });
document.getElementById("signup").addEventListener("click", function () {
  zaraz.track("signup", { method: "demo-button" });
});
show(location.pathname);
