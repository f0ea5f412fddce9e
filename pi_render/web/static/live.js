// Follows the dashboard's event stream: redraws task rows, fills in landed frames' thumbnails
// (within a second of landing) and refreshes the log tail. No framework, no build step.
(function () {
  var source = new EventSource("/events");
  var page = document.querySelector("h1[data-task]");
  var current = page ? page.getAttribute("data-task") : null;
  var log = document.getElementById("log");
  if (log) { log.scrollTop = log.scrollHeight; }  // the tail's end is what is new
  source.addEventListener("task", function (message) {
    var data = JSON.parse(message.data);
    document.querySelectorAll('tr[data-task="' + data.id + '"]').forEach(function (row) {
      var status = row.querySelector(".status");
      if (status) { status.textContent = data.status; status.className = "status " + data.status; }
      var bar = row.querySelector(".bar span");
      if (bar) { bar.style.width = (100 * data.progress).toFixed(1) + "%"; }
      var eta = row.querySelector(".eta");
      if (eta) { eta.textContent = data.eta_s == null ? "" : data.eta_s; }
    });
    if (current && data.id === current) {
      var status = document.getElementById("status");
      if (status) { status.textContent = data.status; status.className = "status " + data.status; }
      var bar = document.querySelector("main > .bar span");
      if (bar) { bar.style.width = (100 * data.progress).toFixed(1) + "%"; }
      fetch("/tasks/" + current + "/log.txt").then(function (r) { return r.text(); })
        .then(function (text) { var log = document.getElementById("log"); if (log) { log.textContent = text; log.scrollTop = log.scrollHeight; } });
    }
  });
  source.addEventListener("frame", function (message) {
    var data = JSON.parse(message.data);
    if (!current || data.task_id !== current) { return; }
    var url = "/tasks/" + current + "/frames/" + data.frame + ".jpg?landed=" + message.lastEventId;
    var figure = document.querySelector('figure[data-frame="' + data.frame + '"] img');
    if (figure) { figure.classList.remove("pending"); figure.src = url; }
    var last = document.getElementById("last");
    if (last) { last.hidden = false; last.src = url; }
  });
})();
